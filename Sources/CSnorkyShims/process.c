// Process helpers: parent-death signal, thread names, close-on-exec pipes, and spawning
// a child with a chosen set of inherited descriptors and a clean signal state.
#define _GNU_SOURCE
#include "CSnorkyShims.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

// posix_spawn_file_actions_addclosefrom_np and close_range: glibc 2.34 and later.
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
#define SNORKY_HAVE_CLOSEFROM 1
#endif

// Signals the child gets default handlers for, whatever the parent did with them
// (SwiftNIO ignores SIGPIPE; a supervisor catches TERM/INT/HUP).
static const int reset_signals[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGPIPE };
static const int reset_count = sizeof reset_signals / sizeof reset_signals[0];

int snorky_set_parent_death_signal(int signal) {
#ifdef __linux__
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0UL, 0UL, 0UL);
#else
    (void)signal;
    errno = ENOSYS;
    return -1;
#endif
}

void snorky_set_thread_name(const char *name) {
    char truncated[16];
    strncpy(truncated, name, sizeof truncated - 1);
    truncated[sizeof truncated - 1] = 0;
#ifdef __linux__
    pthread_setname_np(pthread_self(), truncated);
#endif
}

int snorky_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

// Moving fds[i] to 3 + i in place would clobber a source that sits in the target range
// before it is moved (and dup2(fd, fd) would leave FD_CLOEXEC set). When that can
// happen, every source is first parked above all sources and targets.
static int needs_parking(const int *fds, int nfds) {
    for (int i = 0; i < nfds; i++) {
        if (fds[i] >= 3 && fds[i] < 3 + nfds) return 1;
    }
    return 0;
}

static int parking_base(const int *fds, int nfds) {
    int base = 3 + nfds;
    for (int i = 0; i < nfds; i++) {
        if (fds[i] >= base) base = fds[i] + 1;
    }
    return base;
}

static int valid_fds(const int *fds, int nfds) {
    if (nfds < 0 || nfds > 256 || (nfds > 0 && fds == NULL)) return 0;
    for (int i = 0; i < nfds; i++) {
        if (fds[i] < 0) return 0;
    }
    return 1;
}

static int spawn_with_posix_spawn(pid_t *pid, const char *path, char *const argv[],
                                  char *const envp[], const int *fds, int nfds) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return rc;
    }

    if (needs_parking(fds, nfds)) {
        int base = parking_base(fds, nfds);
        for (int i = 0; i < nfds && rc == 0; i++) rc = posix_spawn_file_actions_adddup2(&actions, fds[i], base + i);
        for (int i = 0; i < nfds && rc == 0; i++) rc = posix_spawn_file_actions_adddup2(&actions, base + i, 3 + i);
        for (int i = 0; i < nfds && rc == 0; i++) rc = posix_spawn_file_actions_addclose(&actions, base + i);
    } else {
        for (int i = 0; i < nfds && rc == 0; i++) rc = posix_spawn_file_actions_adddup2(&actions, fds[i], 3 + i);
    }
#ifdef SNORKY_HAVE_CLOSEFROM
    // Descriptors opened without FD_CLOEXEC (SwiftNIO's sockets are) stay behind: a child
    // holding a copy would keep the parent's connections open after the parent closes them.
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3 + nfds);
#endif

    // A thread of the Swift runtime or libdispatch may block TERM/INT/HUP; the child
    // must not inherit that mask or it could never be stopped gracefully.
    sigset_t empty, defaults;
    sigemptyset(&empty);
    sigemptyset(&defaults);
    for (int i = 0; i < reset_count; i++) sigaddset(&defaults, reset_signals[i]);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &empty);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &defaults);
    if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (rc == 0) rc = posix_spawn(pid, path, &actions, &attr, argv, envp);

    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}

// Runs in the forked child: only async-signal-safe calls, no allocation.
static void exec_in_child(pid_t parent, int report_fd, const char *path, char *const argv[],
                          char *const envp[], const int *fds, int nfds, int death_signal) {
    // Handlers installed by the parent must not run here, and the reset set gets
    // defaults even when the parent ignores them.
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int s = 1; s < NSIG; s++) {
        struct sigaction current;
        if (sigaction(s, NULL, &current) != 0) continue;
        int reset = current.sa_handler != SIG_IGN;
        for (int i = 0; i < reset_count; i++) {
            if (reset_signals[i] == s) reset = 1;
        }
        if (reset) sigaction(s, &dfl, NULL);
    }

    int err = 0;
#ifdef __linux__
    if (prctl(PR_SET_PDEATHSIG, (unsigned long)death_signal, 0UL, 0UL, 0UL) != 0) err = errno;
    // The parent may have died before prctl: then nobody would ever stop us.
    if (err == 0 && getppid() != parent) err = ESRCH;
#else
    (void)parent;
    (void)death_signal;
#endif

    // Keep the error-report pipe out of the way of the descriptors we place.
    if (err == 0) {
        int moved = fcntl(report_fd, F_DUPFD_CLOEXEC, parking_base(fds, nfds) + nfds);
        if (moved < 0) err = errno; else report_fd = moved;
    }
    if (err == 0 && needs_parking(fds, nfds)) {
        int base = parking_base(fds, nfds);
        for (int i = 0; i < nfds && err == 0; i++) if (dup2(fds[i], base + i) < 0) err = errno;
        for (int i = 0; i < nfds && err == 0; i++) if (dup2(base + i, 3 + i) < 0) err = errno;
        for (int i = 0; i < nfds && err == 0; i++) close(base + i);
    } else {
        for (int i = 0; i < nfds && err == 0; i++) if (dup2(fds[i], 3 + i) < 0) err = errno;
    }
#ifdef SNORKY_HAVE_CLOSEFROM
    // As in spawn_with_posix_spawn, nothing else is inherited; the report pipe closes on exec.
    if (err == 0 && report_fd > 3 + nfds) close_range(3 + nfds, (unsigned)report_fd - 1, 0);
    if (err == 0) close_range((unsigned)report_fd + 1, ~0U, 0);
#endif

    if (err == 0) {
        sigset_t empty;
        sigemptyset(&empty);
        sigprocmask(SIG_SETMASK, &empty, NULL);
        execve(path, argv, envp);
        err = errno;
    }
    ssize_t ignored = write(report_fd, &err, sizeof err);
    (void)ignored;
    _exit(127);
}

static int spawn_with_fork(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                           const int *fds, int nfds, int death_signal) {
    // The child reports an exec failure through this pipe; a successful exec closes it.
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return errno;

    // Block everything across fork so no handler of ours runs in the child before it
    // has reset them.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) {
        close(report[0]);
        exec_in_child(parent, report[1], path, argv, envp, fds, nfds, death_signal);
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(report[1]);
    if (child < 0) {
        close(report[0]);
        return fork_errno;
    }

    int child_errno = 0;
    ssize_t n;
    do {
        n = read(report[0], &child_errno, sizeof child_errno);
    } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof child_errno) {
        // The child never ran the program; reap it here so it is not a zombie.
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {}
        return child_errno != 0 ? child_errno : ECHILD;
    }
    *pid = child;
    return 0;
}

int snorky_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                 const int *fds, int nfds, int death_signal) {
    if (pid == NULL || path == NULL || argv == NULL || envp == NULL || !valid_fds(fds, nfds)) return EINVAL;
    if (death_signal == 0) return spawn_with_posix_spawn(pid, path, argv, envp, fds, nfds);
    return spawn_with_fork(pid, path, argv, envp, fds, nfds, death_signal);
}
