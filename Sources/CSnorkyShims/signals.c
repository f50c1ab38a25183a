// The self-pipe trick: a signal handler may only do async-signal-safe work, so it just
// writes the signal number to a pipe that an ordinary thread reads.
#define _GNU_SOURCE
#include "CSnorkyShims.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t signal_pipe_write = -1;
static int signal_pipe_read = -1;
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;

static void forward_signal(int signo) {
    int saved = errno;
    int fd = signal_pipe_write;
    if (fd >= 0) {
        unsigned char byte = (unsigned char)signo;
        // Non-blocking: if the pipe is full, plenty of signals are queued already.
        ssize_t ignored = write(fd, &byte, 1);
        (void)ignored;
    }
    errno = saved;
}

static int open_pipe_locked(void) {
    if (signal_pipe_read >= 0) return 0;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    int flags = fcntl(fds[1], F_GETFL);
    if (flags < 0 || fcntl(fds[1], F_SETFL, flags | O_NONBLOCK) != 0) {
        int saved = errno;
        close(fds[0]);
        close(fds[1]);
        errno = saved;
        return -1;
    }
    signal_pipe_read = fds[0];
    signal_pipe_write = fds[1];
    return 0;
}

int snorky_install_signal_pipe(const int *signals, int count) {
    pthread_mutex_lock(&install_lock);
    int result = open_pipe_locked();
    if (result == 0) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = forward_signal;
        sigemptyset(&action.sa_mask);
        action.sa_flags = SA_RESTART;
        for (int i = 0; i < count && result == 0; i++) {
            result = sigaction(signals[i], &action, NULL);
        }
    }
    int fd = result == 0 ? signal_pipe_read : -1;
    pthread_mutex_unlock(&install_lock);
    return fd;
}
