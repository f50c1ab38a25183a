#ifndef SNORKY_CHIREDIS_SHIM_H
#define SNORKY_CHIREDIS_SHIM_H
// Only the reply parser (redisReader) is used; sockets are SwiftNIO's.
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#endif
