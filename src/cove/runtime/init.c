/*
 * cove-init: process 1 of every Cove sandbox.
 *
 * It reaps every zombie that is reparented to it. On SIGTERM (or SIGINT) it
 * sends SIGTERM to every other process of the sandbox and exits as soon as
 * none of its children is left; the runtime sends SIGKILL after a grace period.
 *
 * Host helper mode, used by the runtime on hybrid cgroup hosts only:
 *   cove-init --hybrid-exec PROGRAM ARGS...
 * runs PROGRAM in a private mount namespace where the cgroup2 mount at
 * /sys/fs/cgroup/unified is absent, so that crun sees a pure cgroup v1 host.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int hybrid_exec(char **argv)
{
    if (unshare(CLONE_NEWNS) != 0) {
        perror("cove-init: unshare");
        return 125;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        perror("cove-init: make / private");
        return 125;
    }
    if (umount2("/sys/fs/cgroup/unified", MNT_DETACH) != 0 && errno != EINVAL) {
        perror("cove-init: umount /sys/fs/cgroup/unified");
        return 125;
    }
    execvp(argv[0], argv);
    perror("cove-init: exec");
    return 127;
}

/* Reap every exited child; return 1 when no child is left at all. */
static int reap(void)
{
    for (;;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);
        if (pid > 0)
            continue;
        return pid < 0 && errno == ECHILD;
    }
}

static int serve(void)
{
    sigset_t all;
    int terminating = 0;

    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        struct timespec tick = { 0, 100 * 1000 * 1000 };
        int sig = sigtimedwait(&all, NULL, terminating ? &tick : NULL);

        if ((sig == SIGTERM || sig == SIGINT) && !terminating) {
            terminating = 1;
            kill(-1, SIGTERM);
        }
        if (reap() && terminating)
            return 0;
    }
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "--hybrid-exec") == 0)
        return hybrid_exec(argv + 2);
    return serve();
}
