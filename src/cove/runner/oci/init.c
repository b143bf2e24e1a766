/*
 * cove-init: process 1 of every Cove sandbox.
 *
 *   cove-init [--go-fd N] [-- SERVICE ARGS...]
 *
 * It reaps every zombie that is reparented to it. Given a SERVICE (the toolbox
 * agent), it runs it with an empty signal mask and restarts it whenever it
 * exits, with a backoff. On SIGTERM (or SIGINT) it sends SIGTERM to every other
 * process of the sandbox and exits as soon as none of its children is left;
 * the runtime sends SIGKILL after a grace period. With --go-fd, it starts the
 * service only once a byte (or end of file) arrives on descriptor N, so that
 * the runtime can place init's cgroups first; file descriptors above 2 that
 * init was given are the service's (its channel to the Cove server).
 * With --listen-fd N (N: the listening socket the service accepts on), a
 * service that exits with status 75 (idle: it served nothing for a while and
 * nothing of it lives) is started again only when a connection is pending on
 * N, at once (no backoff); init itself never accepts. Any other exit restarts
 * the service with the backoff, as without the option.
 * The go may instead be "p" and a pid (of this pid namespace): the runtime
 * started the service itself (a pre-started agent that entered the sandbox, see
 * cove/agent/prestart.py), as a child of a process of the sandbox that exits at
 * once: the service becomes init's child, and init supervises it as its own.
 * With --become UID (gVisor, which has no ambient capabilities and gives a
 * container's non-root process none), init starts as root, takes UID (and
 * gid) for good, keeping its capabilities, and runs the service with effective
 * and saved uid 0 (the real uid stays UID), so that the service keeps them
 * across exec too; the service then takes UID back itself.
 *
 * Host helper mode, the runtime's wrapper of crun:
 *   cove-init --exec [--reap] [--hybrid] [--mask-net-sysctl] [--keep DIR]
 *             [--cgroup2 PATH] [--fds A,B,...] PROGRAM ARGS...
 * --fds moves the descriptors A, B, ... to 3, 4, ... (what `crun run
 * --preserve-fds` hands to the container). --cgroup2 joins the cgroup PATH of
 * the hybrid host's cgroup2 mount (made by Cove), which the container inherits.
 * --hybrid (hybrid cgroup hosts) runs PROGRAM in a private mount namespace
 * where the cgroup2 mount at /sys/fs/cgroup/unified is absent, so that crun
 * sees a pure cgroup v1 host. --mask-net-sysctl (for runsc) runs PROGRAM in a
 * private mount namespace where /proc/sys/net is an empty read-only tmpfs:
 * runsc 20240729 refuses a network namespace in which
 * /proc/sys/net/core/rmem_default exists, which on Linux 6.x is every one.
 * That namespace must not pin other sandboxes' file systems while PROGRAM
 * runs (a `runsc exec` may run for hours): every overlay and loop-device mount
 * is detached from it, except those at or below DIR (the bundle being run).
 * The namespace of --hybrid alone detaches none (each detach costs an RCU grace
 * period, so a call would cost more with every sandbox of the host): crun's
 * calls are short, and the runtime waits, when it stops a sandbox, until no such
 * namespace holds its disk any more (the loop device is gone).
 * --reap (for `runsc run --detach`) runs PROGRAM as the child of a reaper: a
 * process of a session of its own that is a child subreaper, so that what
 * PROGRAM leaves running (gVisor's sentry and gofer) is reparented to it, not
 * to the host's init, and reaped the moment it exits (runsc waits for that when
 * it deletes a sandbox). The caller's process returns PROGRAM's exit status as
 * soon as PROGRAM ends; the reaper stays, reaping, until it has no child left.
 * PROGRAM is killed if the caller's process dies first (say, a timeout). The
 * private mount namespace is PROGRAM's alone: the reaper pins no mount.
 *
 * Spare mode, the toolbox agent's spare process (see cove/agent/spare.py):
 *   cove-init --spare ORDER ERROR OUT ERR USERNS JOIN,JOIN,... CAPS
 * (descriptor numbers; CAPS: the capabilities the workload keeps, comma
 * separated) joins the cgroups JOIN (writes 0 to their cgroup.procs), then waits
 * for the order on ORDER: NUL-terminated fields uid, gid, merge (1: stderr to
 * OUT too), cwd, the count of groups and the groups, the count of argv and argv,
 * the count of env and env. It then runs argv as a fresh spawn would: stdin from
 * /dev/null, stdout to OUT, stderr to ERR (or OUT), in cwd, default signals, a
 * new session, in the user namespace USERNS with only CAPS in its bounding set,
 * as uid/gid/groups, PATH looked up in env (USERNS -1: the agent is not confined,
 * as in unit tests; then the ids change only from root). A failure before the exec writes
 * two ints (errno, 0 for the working directory or 1 for anything else) to ERROR
 * and exits 255; an order pipe closed empty exits 0 (the spare was discarded).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_DROPS 4096

/* Undo the octal escapes (\040 and friends) of /proc/self/mounts in place. */
static void unescape(char *s)
{
    char *out = s;

    while (*s) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] && s[3]) {
            *out++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 4;
        } else {
            *out++ = *s++;
        }
    }
    *out = 0;
}

static int is_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);

    return strncmp(path, dir, n) == 0 && (path[n] == 0 || path[n] == '/');
}

/* Detach overlay and loop-device mounts (other than / and those under keep). */
static void drop_sandbox_mounts(const char *keep)
{
    char line[8192], *points[MAX_DROPS];
    int n = 0;
    FILE *f = fopen("/proc/self/mounts", "re");

    if (f == NULL)
        return;
    while (n < MAX_DROPS && fgets(line, sizeof line, f)) {
        char *src = strtok(line, " "), *point = strtok(NULL, " "), *type = strtok(NULL, " ");

        if (src == NULL || point == NULL || type == NULL)
            continue;
        unescape(point);
        if (strcmp(point, "/") == 0 || (keep != NULL && is_under(point, keep)))
            continue;
        if (strcmp(type, "overlay") == 0 || strncmp(src, "/dev/loop", 9) == 0)
            points[n++] = strdup(point);
    }
    fclose(f);
    while (n-- > 0)
        umount2(points[n], MNT_DETACH);
}

/* Join the cgroup2 cgroup PATH (relative to the hybrid host's unified mount). */
static int join_cgroup2(const char *path)
{
    char file[4096];
    int fd, ok;

    snprintf(file, sizeof file, "/sys/fs/cgroup/unified%s/cgroup.procs", path);
    fd = open(file, O_WRONLY | O_CLOEXEC);
    ok = fd >= 0 && write(fd, "0", 1) == 1;
    if (fd >= 0)
        close(fd);
    if (!ok)
        perror("cove-init: join cgroup2");
    return ok ? 0 : -1;
}

/* Move the comma-separated descriptors LIST to 3, 4, ... */
static int place_fds(const char *list)
{
    int from[64], n = 0;
    char *copy = strdup(list), *save = NULL;

    for (char *tok = strtok_r(copy, ",", &save); tok && n < 64; tok = strtok_r(NULL, ",", &save))
        from[n++] = fcntl(atoi(tok), F_DUPFD_CLOEXEC, 3 + 64);
    free(copy);
    for (int i = 0; i < n; i++) {
        if (from[i] < 0 || dup2(from[i], 3 + i) < 0) {
            perror("cove-init: place fds");
            return -1;
        }
        close(from[i]);
    }
    return 0;
}

/* A private mount namespace (without other sandboxes' mounts if DROP: see the top comment). */
static int private_mounts(const char *keep, int drop)
{
    if (unshare(CLONE_NEWNS) != 0) {
        perror("cove-init: unshare");
        return -1;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        perror("cove-init: make / private");
        return -1;
    }
    if (drop)
        drop_sandbox_mounts(keep);
    return 0;
}

/* Detach the cgroup2 mount (in the private mount namespace). */
static int hide_cgroup2(void)
{
    if (umount2("/sys/fs/cgroup/unified", MNT_DETACH) != 0 && errno != EINVAL) {
        perror("cove-init: umount /sys/fs/cgroup/unified");
        return -1;
    }
    return 0;
}

/* An empty read-only /proc/sys/net (in the private mount namespace). */
static int mask_net_sysctl(void)
{
    if (mount("none", "/proc/sys/net", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=4k") != 0) {
        perror("cove-init: mask /proc/sys/net");
        return -1;
    }
    return 0;
}

/* Detach stdio: the caller's log stays the caller's (PROGRAM's children keep theirs). */
static void let_go_of_stdio(void)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);

    if (null < 0)
        return;
    for (int fd = 0; fd < 3; fd++)
        dup2(null, fd);
    close(null);
}

/* Wait for CHILD while watching REPORT (the write end of a pipe): when its reader
 * is gone before CHILD ends, CHILD is killed. Returns CHILD's wait status. */
static int wait_watching(pid_t child, int report)
{
    int status, pidfd = (int)syscall(SYS_pidfd_open, child, 0);

    for (;;) {
        struct pollfd fds[2] = { { pidfd, POLLIN, 0 }, { report, 0, 0 } };

        if (pidfd >= 0 && poll(fds, 2, -1) > 0 && (fds[1].revents & POLLERR) &&
            !(fds[0].revents & POLLIN)) {
            kill(child, SIGKILL);
            pidfd = -1; /* (left open: the reaper exits soon) */
        }
        if (pidfd >= 0 && !(fds[0].revents & POLLIN))
            continue;
        if (waitpid(child, &status, 0) == child)
            return status;
        if (errno != EINTR)
            return 125 << 8;
    }
}

/*
 * --reap: fork the reaper and return PROGRAM's exit status as it reports it. The
 * reaper runs SETUP and PROGRAM in a child, reports, then reaps until no child
 * is left and exits.
 */
static int reap_exec(char **argv, int (*setup)(void))
{
    int report[2], status;
    unsigned char code = 125;
    pid_t child;

    if (pipe2(report, O_CLOEXEC) != 0 || (child = fork()) < 0) {
        perror("cove-init: reaper");
        return 125;
    }
    if (child > 0) {
        ssize_t n;

        close(report[1]);
        while ((n = read(report[0], &code, 1)) < 0 && errno == EINTR)
            ;
        return n == 1 ? code : 125;
    }
    close(report[0]);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL); /* (children must become zombies to be waited for) */
    if (setsid() < 0 || prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
        perror("cove-init: reaper");
        _exit(write(report[1], &code, 1) == 1 ? 0 : 1);
    }
    child = fork();
    if (child == 0) {
        signal(SIGPIPE, SIG_DFL);
        if (setup() != 0)
            _exit(125);
        execvp(argv[0], argv);
        perror("cove-init: exec");
        _exit(127);
    }
    if (child > 0) {
        status = wait_watching(child, report[1]);
        code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    } else {
        perror("cove-init: fork");
    }
    if (write(report[1], &code, 1) != 1)
        code = 125;
    close(report[1]);
    let_go_of_stdio();
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    _exit(0);
}

static const char *opt_keep, *opt_fds, *opt_cgroup2;
static int opt_hybrid, opt_mask_net;

/* What --exec does before it runs PROGRAM (see the top comment). */
static int wrap_setup(void)
{
    if ((opt_cgroup2 != NULL && join_cgroup2(opt_cgroup2) != 0) ||
        (opt_fds != NULL && place_fds(opt_fds) != 0) ||
        ((opt_hybrid || opt_mask_net) && private_mounts(opt_keep, opt_mask_net) != 0) ||
        (opt_hybrid && hide_cgroup2() != 0) || (opt_mask_net && mask_net_sysctl() != 0))
        return -1;
    return 0;
}

static int wrap_exec(char **argv)
{
    int reap = 0;

    for (;; argv++) {
        if (argv[0] != NULL && strcmp(argv[0], "--reap") == 0)
            reap = 1;
        else if (argv[0] != NULL && strcmp(argv[0], "--hybrid") == 0)
            opt_hybrid = 1;
        else if (argv[0] != NULL && strcmp(argv[0], "--mask-net-sysctl") == 0)
            opt_mask_net = 1;
        else if (argv[0] != NULL && argv[1] != NULL && strcmp(argv[0], "--keep") == 0)
            opt_keep = *++argv;
        else if (argv[0] != NULL && argv[1] != NULL && strcmp(argv[0], "--cgroup2") == 0)
            opt_cgroup2 = *++argv;
        else if (argv[0] != NULL && argv[1] != NULL && strcmp(argv[0], "--fds") == 0)
            opt_fds = *++argv;
        else
            break;
    }
    if (argv[0] == NULL) {
        fprintf(stderr, "cove-init: nothing to run\n");
        return 125;
    }
    if (reap)
        return reap_exec(argv, wrap_setup);
    if (wrap_setup() != 0)
        return 125;
    execvp(argv[0], argv);
    perror("cove-init: exec");
    return 127;
}

/* The supervised service (the toolbox agent), if any. */
static char **service;
static pid_t service_pid = -1;
static int service_status;
static int root_service;
static int listen_fd = -1; /* --listen-fd: a pending connection starts an idle service */
static int service_running;

#define IDLE_EXIT 75

/* capget/capset's structures (as linux/capability.h has them: musl-gcc has no
 * kernel headers). */
struct cap_header {
    uint32_t version;
    int pid;
};
struct cap_data {
    uint32_t effective, permitted, inheritable;
};
#define CAP_VERSION_3 0x20080522

/* Take uid (and gid) UID for good, keeping the permitted capabilities effective. */
static int become(uid_t uid)
{
    struct cap_header header = { CAP_VERSION_3, 0 };
    struct cap_data data[2];

    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 || setgroups(0, NULL) != 0 ||
        setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0 ||
        prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 ||
        syscall(SYS_capget, &header, data) != 0)
        return -1;
    data[0].effective = data[0].permitted;
    data[1].effective = data[1].permitted;
    return syscall(SYS_capset, &header, data) == 0 ? 0 : -1;
}

static long now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

/* Variables the dynamic loader or libc act on (glibc's "unsecure" list): the
 * sandbox's env vars may name files the workload writes (LD_PRELOAD=/home/x.so),
 * and the service must not run the workload's code. They are passed on renamed
 * (COVE_HELD_<name>); the agent gives them back to the user's processes. */
static const char *const loader_vars[] = {
    "LD_", "GCONV_PATH=", "GETCONF_DIR=", "GLIBC_TUNABLES=", "HOSTALIASES=", "LOCALDOMAIN=",
    "LOCPATH=", "MALLOC_", "NIS_PATH=", "NLSPATH=", "RESOLV_HOST_CONF=", "RES_OPTIONS=",
    "TMPDIR=", "TZDIR=", NULL,
};

static void hold_loader_vars(void)
{
    extern char **environ;

    for (char **entry = environ; *entry != NULL; entry++) {
        for (const char *const *name = loader_vars; *name != NULL; name++) {
            if (strncmp(*entry, *name, strlen(*name)) == 0) {
                size_t size = strlen(*entry) + sizeof("COVE_HELD_");
                char *held = malloc(size);

                if (held == NULL)
                    _exit(126);
                snprintf(held, size, "COVE_HELD_%s", *entry);
                *entry = held;
                break;
            }
        }
    }
}

static pid_t spawn(char **argv)
{
    pid_t pid = fork();

    if (pid == 0) {
        sigset_t none;

        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        hold_loader_vars();
        if (root_service && (setresgid(getgid(), 0, 0) != 0 || setresuid(getuid(), 0, 0) != 0)) {
            perror("cove-init: service as root");
            _exit(126);
        }
        execv(argv[0], argv);
        perror("cove-init: exec service");
        _exit(127);
    }
    return pid;
}

/* Reap every exited child; return 1 when no child is left at all. */
static int reap(void)
{
    for (;;) {
        pid_t pid;
        int status;

        pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            if (pid == service_pid) {
                service_pid = -1;
                service_status = status;
            }
            continue;
        }
        return pid < 0 && errno == ECHILD;
    }
}

/* The service exited idle: it is started again when a connection is pending. */
static int idle;

/*
 * Start the service when it is due; after it died, restart it with a backoff
 * from 100 ms doubling to 5 s (reset once it has run for 10 s); after an idle
 * exit, once `pending` (a connection waits on listen_fd).
 * Returns how long to wait (ms) before it is due again, or -1 for "no timer".
 */
static long supervise(int terminating, int pending)
{
    static long due, started, backoff = 100;
    long now = now_ms();

    if (service == NULL || terminating)
        return -1;
    if (service_running && service_pid < 0) {
        service_running = 0;
        idle = listen_fd >= 0 && WIFEXITED(service_status) &&
               WEXITSTATUS(service_status) == IDLE_EXIT;
        if (!idle) {
            backoff = now - started > 10000 ? 100 : (backoff * 2 > 5000 ? 5000 : backoff * 2);
            due = now + backoff;
        }
    }
    if (idle && pending) {
        idle = 0;
        due = now;
    }
    if (!service_running && !idle && now >= due) {
        service_pid = spawn(service);
        service_running = service_pid > 0;
        started = now;
        if (!service_running)
            due = now + backoff;
    }
    return service_running || idle ? -1 : due - now;
}

/* The next signal from the signalfd SFD (0: none now). */
static int next_signal(int sfd)
{
    struct signalfd_siginfo info;

    return read(sfd, &info, sizeof info) == sizeof info ? (int)info.ssi_signo : 0;
}

static int serve(void)
{
    sigset_t all;
    int terminating = 0, pending = 0, sfd;

    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    sfd = signalfd(-1, &all, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) {
        perror("cove-init: signalfd");
        return 125;
    }
    for (;;) {
        long wait_ms = terminating ? 100 : supervise(0, pending);
        /* (the listener is watched only while the service is idle: it accepts) */
        struct pollfd fds[2] = { { sfd, POLLIN, 0 }, { idle ? listen_fd : -1, POLLIN, 0 } };
        int sig;

        if (poll(fds, 2, wait_ms > INT32_MAX ? INT32_MAX : (int)wait_ms) < 0 && errno != EINTR)
            return 125;
        pending = (fds[1].revents & POLLIN) != 0;
        while ((sig = next_signal(sfd)) != 0) {
            if ((sig == SIGTERM || sig == SIGINT) && !terminating) {
                terminating = 1;
                if (getpid() == 1)
                    kill(-1, SIGTERM); /* every process of the pid namespace */
                else if (service_pid > 0)
                    kill(service_pid, SIGTERM); /* never broadcast outside a sandbox */
            }
        }
        if (reap() && terminating)
            return 0;
    }
}

/*
 * Wait for the runtime's go (a byte, or end of file), then close the descriptor.
 * A go of "p" and a pid: the service already runs as that process (see the header).
 */
static void await_go(int fd)
{
    char go[24];
    ssize_t n;

    /* (one write of the runtime, shorter than PIPE_BUF: one read gets all of it) */
    while ((n = read(fd, go, sizeof go - 1)) < 0 && errno == EINTR)
        ;
    close(fd);
    go[n > 0 ? n : 0] = '\0';
    if (go[0] == 'p' && atoi(go + 1) > 1) {
        service_pid = (pid_t)atoi(go + 1);
        service_running = 1;
    }
}

/* ---- spare mode (see the header) ---- */

static int spare_error = -1;
static int spare_what = 1;

static void spare_fail(int code)
{
    int report[2] = { code ? code : EIO, spare_what };

    if (write(spare_error, report, sizeof(report)) < 0) {
        /* nothing left to tell it with */
    }
    _exit(255);
}

static void spare_join(const char *list)
{
    while (*list) {
        int dir = atoi(list);
        int fd = openat(dir, "cgroup.procs", O_WRONLY | O_CLOEXEC);

        if (fd < 0 || write(fd, "0", 1) != 1)
            spare_fail(errno);
        close(fd);
        fcntl(dir, F_SETFD, FD_CLOEXEC);
        list = strchrnul(list, ',');
        if (*list == ',')
            list++;
    }
}

/* The whole order (NUL-terminated fields); NULL: the pipe closed empty. */
static char *spare_read(int fd, size_t *size)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);

    for (;;) {
        ssize_t got;

        if (buf == NULL)
            spare_fail(ENOMEM);
        got = read(fd, buf + len, cap - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            spare_fail(errno);
        if (got == 0)
            break;
        len += (size_t)got;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    close(fd);
    *size = len;
    return len ? buf : NULL;
}

/* The next NUL-terminated field of the order. */
static char *spare_field(char **at, char *end)
{
    char *field = *at;
    char *nul = field < end ? memchr(field, '\0', (size_t)(end - field)) : NULL;

    if (nul == NULL)
        spare_fail(EINVAL);
    *at = nul + 1;
    return field;
}

static char **spare_list(char **at, char *end, size_t *count)
{
    long n = atol(spare_field(at, end));
    char **list;

    if (n < 0 || n > (end - *at))
        spare_fail(EINVAL);
    list = calloc((size_t)n + 1, sizeof(char *));
    if (list == NULL)
        spare_fail(ENOMEM);
    for (long i = 0; i < n; i++)
        list[i] = spare_field(at, end);
    *count = (size_t)n;
    return list;
}

static int spare_keeps(const char *caps, int cap)
{
    while (*caps) {
        if (atoi(caps) == cap)
            return 1;
        caps = strchrnul(caps, ',');
        if (*caps == ',')
            caps++;
    }
    return 0;
}

/* execvpe with PATH taken from env (as Python's subprocess does), not ours. */
static void spare_exec(char **argv, char **env)
{
    const char *path = "/bin:/usr/bin";
    int saved = ENOENT;

    if (strchr(argv[0], '/') != NULL) {
        execve(argv[0], argv, env);
        spare_fail(errno);
    }
    for (char **e = env; *e != NULL; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    while (1) {
        const char *stop = strchrnul(path, ':');
        size_t dir = (size_t)(stop - path);
        char full[4096];

        if (dir + strlen(argv[0]) + 2 <= sizeof(full)) {
            memcpy(full, path, dir);
            full[dir] = '\0';
            if (dir && full[dir - 1] != '/')
                strcat(full, "/");
            strcat(full, argv[0]);
            execve(full, argv, env);
            if (errno != ENOENT && errno != ENOTDIR)
                saved = errno;
        }
        if (*stop == '\0')
            break;
        path = stop + 1;
    }
    spare_fail(saved);
}

static int spare_fd_order(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

/* Close every descriptor but 0-2 and those of the command line (``keep``, n of them):
 * only what the agent passed on purpose may reach the command. */
static void spare_close_others(int *keep, int n)
{
    unsigned int low = 3;

    qsort(keep, (size_t)n, sizeof(int), spare_fd_order);
    for (int i = 0; i < n; i++) {
        if (keep[i] < (int)low)
            continue;
        if (keep[i] > (int)low)
            syscall(SYS_close_range, low, (unsigned int)keep[i] - 1, 0);
        low = (unsigned int)keep[i] + 1;
    }
    syscall(SYS_close_range, low, ~0U, 0);
}

static int spare_main(char **argv)
{
    int order, out, err, userns, devnull, merge;
    char *buf, *at, *end, *cwd, **groups_s, **args, **env;
    size_t size, ngroups, nargs, nenv;
    uid_t uid;
    gid_t gid, *groups;
    sigset_t none;

    for (int i = 0; i < 7; i++)
        if (argv[i] == NULL)
            return 2;
    order = atoi(argv[0]);
    spare_error = atoi(argv[1]);
    out = atoi(argv[2]);
    err = atoi(argv[3]);
    userns = atoi(argv[4]);
    {
        int keep[64] = { order, spare_error, out, err, userns };
        int n = 5;

        for (const char *at = argv[5]; *at && n < 64; n++) {
            keep[n] = atoi(at);
            at = strchrnul(at, ',');
            if (*at == ',')
                at++;
        }
        spare_close_others(keep, n);
    }
    fcntl(order, F_SETFD, FD_CLOEXEC);
    fcntl(spare_error, F_SETFD, FD_CLOEXEC); /* closed by the exec: the agent's sign */
    if (userns >= 0)
        fcntl(userns, F_SETFD, FD_CLOEXEC);
    spare_join(argv[5]);
    /* What does not depend on the order is done while waiting for it. */
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (setsid() < 0)
        spare_fail(errno);
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        spare_fail(errno);
    buf = spare_read(order, &size);
    if (buf == NULL)
        _exit(0); /* discarded */
    at = buf;
    end = buf + size;
    uid = (uid_t)atol(spare_field(&at, end));
    gid = (gid_t)atol(spare_field(&at, end));
    merge = atoi(spare_field(&at, end));
    cwd = spare_field(&at, end);
    groups_s = spare_list(&at, end, &ngroups);
    args = spare_list(&at, end, &nargs);
    env = spare_list(&at, end, &nenv);
    if (nargs == 0)
        spare_fail(EINVAL);
    groups = calloc(ngroups + 1, sizeof(gid_t));
    if (groups == NULL)
        spare_fail(ENOMEM);
    for (size_t i = 0; i < ngroups; i++)
        groups[i] = (gid_t)atol(groups_s[i]);
    if (dup2(devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(merge ? out : err, 2) < 0)
        spare_fail(errno);
    if (out > 2)
        close(out);
    if (err > 2)
        close(err);
    spare_what = 0;
    if (chdir(cwd) != 0)
        spare_fail(errno);
    spare_what = 1;
    if (userns >= 0) {
        if (setns(userns, CLONE_NEWUSER) != 0)
            spare_fail(errno);
        for (int cap = 0; cap <= 63; cap++) {
            if (spare_keeps(argv[6], cap))
                continue;
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
                if (errno == EINVAL)
                    break; /* past the kernel's last capability */
                spare_fail(errno);
            }
        }
    }
    if ((userns >= 0 || (geteuid() == 0 && uid != 0)) &&
        (setgroups(ngroups, groups) != 0 || setresgid(gid, gid, gid) != 0 ||
         setresuid(uid, uid, uid) != 0))
        spare_fail(errno);
    spare_exec(args, env);
    return 255;
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "--spare") == 0)
        return spare_main(argv + 2);
    if (argc > 2 && strcmp(argv[1], "--exec") == 0)
        return wrap_exec(argv + 2);
    argv++;
    if (argv[0] != NULL && argv[1] != NULL && strcmp(argv[0], "--go-fd") == 0) {
        await_go(atoi(argv[1]));
        argv += 2;
    }
    if (argv[0] != NULL && argv[1] != NULL && strcmp(argv[0], "--become") == 0) {
        if (become((uid_t)atoi(argv[1])) != 0) {
            perror("cove-init: become");
            return 125;
        }
        root_service = 1;
        argv += 2;
    }
    if (argv[0] != NULL && argv[1] != NULL && strcmp(argv[0], "--listen-fd") == 0) {
        listen_fd = atoi(argv[1]);
        argv += 2;
    }
    if (argv[0] != NULL && argv[1] != NULL && strcmp(argv[0], "--") == 0)
        service = argv + 1;
    return serve();
}
