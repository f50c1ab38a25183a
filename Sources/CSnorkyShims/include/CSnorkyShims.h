// Small C helpers for what Swift cannot call directly (variadic prctl and fcntl; pipe2
// and pthread_setname_np, which glibc only declares under _GNU_SOURCE), what must run
// between fork and exec (async-signal-safe code only), and signal handlers.
#ifndef CSNORKY_SHIMS_H
#define CSNORKY_SHIMS_H

#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/// prctl(PR_SET_PDEATHSIG, signal): the kernel sends `signal` to the calling process
/// when the thread that created it exits. Returns 0 or -1 with errno set.
/// On systems without prctl it returns -1 with errno = ENOSYS.
int snorky_set_parent_death_signal(int signal);

/// Names the calling thread (shown by `top -H`, `ps -L`; truncated to 15 bytes).
void snorky_set_thread_name(const char *name);

/// pipe2(fds, O_CLOEXEC): both ends close-on-exec from the start, so no child spawned
/// meanwhile by another thread inherits them. Returns 0 or -1 with errno set.
int snorky_pipe_cloexec(int fds[2]);

/// Starts `path` with `argv` and `envp` (both NULL-terminated) and stores the child's
/// pid in `*pid`.
///
/// `fds[i]` (i < nfds) appears in the child as descriptor 3 + i, without FD_CLOEXEC;
/// every other descriptor is closed (with glibc 2.34 or later; before that only those
/// marked FD_CLOEXEC), and 0, 1, 2 are inherited. The child starts with an empty signal mask and default dispositions for
/// SIGTERM, SIGINT, SIGHUP, SIGCHLD and SIGPIPE, whatever the calling thread had.
///
/// With `death_signal` == 0 this is posix_spawn (cheap: vfork-like). With a non-zero
/// `death_signal` it forks, sets PR_SET_PDEATHSIG(death_signal) in the child and execs,
/// for children that cannot set it themselves (redis-server); the signal fires when the
/// *calling thread* exits, so call it from a long-lived thread.
///
/// Returns 0, or an errno value (nothing is started then; an exec failure is
/// reported here too, not as a child that exits 127).
int snorky_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                 const int *fds, int nfds, int death_signal);

/// Installs a handler for each of `signals[0..<count]` that writes the signal number as
/// one byte to a pipe and does nothing else (the self-pipe trick), so an ordinary thread
/// can react to signals. Returns the pipe's read end (blocking, close-on-exec), or -1
/// with errno set. Process-wide: a second call returns the same read end and adds the
/// new signals.
int snorky_install_signal_pipe(const int *signals, int count);

#ifdef __cplusplus
}
#endif

#endif
