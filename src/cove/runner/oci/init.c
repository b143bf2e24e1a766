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
#include <sys/stat.h>
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

/* ---- relay mode (see cove/agent/relay.py) ----
 *
 *   cove-init --relay CONN CONTROL USERNS KILLROOT JOIN,JOIN,... CAPS
 *
 * Runs the Cove server's plain commands and answers them itself: CONN is a
 * connection the server opened to the agent's socket, which the agent handed
 * over. The relay joins the cgroups JOIN (those every command joins), reads its
 * setup from CONTROL (a 4-byte big-endian length, then NUL-terminated fields:
 * uid, gid, the count of groups and the groups, the default working directory,
 * the state of /etc/passwd and /etc/group as the agent read them, the count of
 * checks and the checks ("d:PATH" is a directory, "D:PATH" is not, "e:PATH"
 * exists, "E:PATH" does not), the seconds it waits idle, the count of env and
 * env) and sends R. It keeps the agent's ids and capabilities; each command runs
 * in a spare (spare mode in a process the relay forks ahead of the order, in a
 * new cgroup of its own below KILLROOT, -1: none), which takes the user's ids,
 * user namespace USERNS and capabilities CAPS as the agent's spares do.
 *
 * Orders come one at a time on CONN: a 4-byte big-endian length (at most
 * RELAY_ORDER_MAX), then NUL-terminated fields: cwd (empty: the default), the
 * timeout in ms (0: none), the output limit in bytes (0: none), the count of
 * variables and the variables (over the setup's env, as the agent's environment
 * does), the command. The relay takes an order only while the agent holds
 * CONTROL open (it closes it when the environment changes, or to let the relay
 * go), the user databases are the files the agent read and every check holds;
 * else (and when it waited its seconds idle) it sends N and exits 0: the server
 * then runs the command through the agent (nothing ran). Taking it, it runs
 * `/bin/sh -c COMMAND` (stdin from /dev/null, stdout and stderr on one pipe, a
 * new session) and sends its output as O frames, clipped as the agent's
 * Clipped does (the first half as it comes, then M with the count dropped, then
 * the newest half), then X with the exit code (128 + the signal of a killed
 * one), or F with an errno when it never became the command. Output that comes
 * after the exit is read for RELAY_DRAIN_MS more; what processes left behind
 * print later is read and dropped until they close the pipe (at most
 * RELAY_DRAINS pipes). Past the timeout everything in the command's cgroup is
 * killed and T sent; when the server hangs up during a command, the same, and
 * the relay exits. Frames are a kind byte, a 4-byte big-endian length, the
 * payload.
 */

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#define RELAY_ORDER_MAX (1 << 20)
#define RELAY_SETUP_MAX (1 << 20)
#define RELAY_CHUNK 65536
#define RELAY_DRAIN_MS 200
#define RELAY_DRAINS 64
#define RELAY_LEFT 256
#define RELAY_KILL_ROUNDS 100

static int relay_conn = -1;
static int relay_ready = 0; /* R was sent, no command under way: a relay that quits says N */
static int relay_root = -1;
static pid_t relay_child = -1;  /* the command under way */
static int relay_group = -1;    /* its cgroup */

struct relay_spare {
    pid_t pid;
    int order, error, out, group;
    char name[48];
};

static int relay_write_all(int fd, const void *data, size_t size);
static void relay_kill(int group, pid_t child);

static void relay_quit(int code)
{
    if (relay_child > 0)
        relay_kill(relay_group, relay_child);
    if (code == 0 && relay_ready) {
        static const unsigned char declined[5] = { 'N', 0, 0, 0, 0 };

        if (relay_write_all(relay_conn, declined, sizeof(declined)) != 0) {
            /* the server is gone: nothing to tell */
        }
    }
    _exit(code);
}

/* SIGKILL everything of a command: its cgroup ``group`` (cgroup.kill, else every
 * process in it, round after round until none is left), or its process group. */
static void relay_kill(int group, pid_t child)
{
    int fd;

    if (child > 0)
        kill(-child, SIGKILL);
    if (group < 0)
        return;
    fd = openat(group, "cgroup.kill", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, "1", 1) == 1) {
            close(fd);
            return;
        }
        close(fd);
    }
    for (int round = 0; round < RELAY_KILL_ROUNDS; round++) {
        char buf[4096];
        ssize_t got;
        int any = 0;

        fd = openat(group, "cgroup.procs", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return;
        got = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (got <= 0)
            return;
        buf[got] = '\0';
        for (char *at = buf; *at;) {
            long pid = strtol(at, &at, 10);

            if (pid > 0) {
                kill((pid_t)pid, SIGKILL);
                any = 1;
            }
            while (*at == '\n')
                at++;
        }
        if (!any)
            return;
        usleep(2000);
    }
}

static int relay_write_all(int fd, const void *data, size_t size)
{
    const char *at = data;

    while (size > 0) {
        ssize_t put = write(fd, at, size);

        if (put < 0 && errno == EINTR)
            continue;
        if (put <= 0)
            return -1;
        at += put;
        size -= (size_t)put;
    }
    return 0;
}

/* A frame to the server; a server gone away ends the relay (and the command). */
static void relay_send(char kind, const void *payload, uint32_t size)
{
    unsigned char head[5] = { (unsigned char)kind, (unsigned char)(size >> 24),
                              (unsigned char)(size >> 16), (unsigned char)(size >> 8),
                              (unsigned char)size };

    if (relay_write_all(relay_conn, head, sizeof(head)) != 0 ||
        (size && relay_write_all(relay_conn, payload, size) != 0))
        relay_quit(1);
}

static int relay_read_all(int fd, void *data, size_t size)
{
    char *at = data;

    while (size > 0) {
        ssize_t got = read(fd, at, size);

        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        at += got;
        size -= (size_t)got;
    }
    return 0;
}

/* A length-prefixed message of at most ``max`` bytes (NUL-terminated fields); exits
 * quietly when it does not come whole. */
static char *relay_message(int fd, uint32_t max, char **end)
{
    unsigned char head[4];
    uint32_t size;
    char *buf;

    if (relay_read_all(fd, head, sizeof(head)) != 0)
        relay_quit(0);
    size = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 | (uint32_t)head[2] << 8 | head[3];
    if (size == 0 || size > max)
        relay_quit(0);
    buf = malloc(size + 1);
    if (buf == NULL || relay_read_all(fd, buf, size) != 0)
        relay_quit(0);
    buf[size] = '\0';
    *end = buf + size;
    return buf;
}

static char *relay_field(char **at, char *end)
{
    char *field = *at;
    char *nul = field < end ? memchr(field, '\0', (size_t)(end - field)) : NULL;

    if (nul == NULL)
        relay_quit(0);
    *at = nul + 1;
    return field;
}

static char **relay_list(char **at, char *end, size_t *count)
{
    long n = atol(relay_field(at, end));
    char **list;

    if (n < 0 || n > (end - *at))
        relay_quit(0);
    list = calloc((size_t)n + 1, sizeof(char *));
    if (list == NULL)
        relay_quit(0);
    for (long i = 0; i < n; i++)
        list[i] = relay_field(at, end);
    *count = (size_t)n;
    return list;
}

/* "dev:ino:size:ctime_ns:mtime_ns" of ``path`` ("-": missing), as the agent writes it. */
static void relay_state(const char *path, char *out, size_t size)
{
    struct stat st;

    if (stat(path, &st) != 0) {
        snprintf(out, size, "-");
        return;
    }
    snprintf(out, size, "%llu:%llu:%lld:%lld:%lld", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino, (long long)st.st_size,
             (long long)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec,
             (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
}

static int relay_is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Whether the sandbox is as the agent saw it when it made the setup. */
static int relay_still(const char *passwd, const char *group, char **checks, size_t nchecks)
{
    char now[160];
    struct stat st;

    relay_state("/etc/passwd", now, sizeof(now));
    if (strcmp(now, passwd) != 0)
        return 0;
    relay_state("/etc/group", now, sizeof(now));
    if (strcmp(now, group) != 0)
        return 0;
    for (size_t i = 0; i < nchecks; i++) {
        const char *check = checks[i];

        const char *path = check + 2;
        int holds;

        if (strlen(check) < 2 || check[1] != ':')
            return 0;
        switch (check[0]) {
        case 'd':
            holds = relay_is_dir(path);
            break;
        case 'D':
            holds = !relay_is_dir(path);
            break;
        case 'e':
            holds = stat(path, &st) == 0;
            break;
        case 'E':
            holds = stat(path, &st) != 0;
            break;
        default:
            holds = 0;
        }
        if (!holds)
            return 0;
    }
    return 1;
}

/* ``extra`` ("NAME=value" each) over ``env`` (n of them, room for all of extra):
 * a name already there keeps its place, a new one is added at the end. */
static size_t relay_merge(char **env, size_t n, char **extra, size_t nextra)
{
    for (size_t i = 0; i < nextra; i++) {
        const char *eq = strchr(extra[i], '=');
        size_t name = eq ? (size_t)(eq - extra[i]) : 0;
        size_t j;

        if (name == 0)
            relay_quit(0); /* (the server checks names: not a relay order) */
        for (j = 0; j < n; j++)
            if (strncmp(env[j], extra[i], name + 1) == 0)
                break;
        env[j] = extra[i];
        if (j == n)
            n++;
    }
    env[n] = NULL;
    return n;
}

static long long relay_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What of the output is kept to send at the end (the newest ``keep`` bytes). */
struct relay_tail {
    char *buf;
    size_t keep, start, len;
    unsigned long long omitted;
};

static void relay_output(struct relay_tail *tail, size_t *head, const char *data,
                         size_t size)
{
    if (*head > 0) {
        size_t now = size < *head ? size : *head;

        relay_send('O', data, (uint32_t)now);
        *head -= now;
        data += now;
        size -= now;
    }
    for (size_t i = 0; i < size; i++) { /* a ring of the newest bytes */
        if (tail->keep == 0) {
            tail->omitted += size - i;
            break;
        }
        if (tail->len == tail->keep) {
            tail->buf[tail->start] = data[i];
            tail->start = (tail->start + 1) % tail->keep;
            tail->omitted++;
        } else {
            tail->buf[(tail->start + tail->len) % tail->keep] = data[i];
            tail->len++;
        }
    }
}

static void relay_flush(struct relay_tail *tail)
{
    if (tail->omitted) {
        unsigned char n[8];

        for (int i = 0; i < 8; i++)
            n[i] = (unsigned char)(tail->omitted >> (56 - 8 * i));
        relay_send('M', n, sizeof(n));
    }
    while (tail->len > 0) {
        size_t run = tail->keep - tail->start < tail->len ? tail->keep - tail->start : tail->len;

        if (run > RELAY_CHUNK)
            run = RELAY_CHUNK;
        relay_send('O', tail->buf + tail->start, (uint32_t)run);
        tail->start = (tail->start + run) % tail->keep;
        tail->len -= run;
    }
}

static void relay_int(char kind, int value)
{
    unsigned char n[4] = { (unsigned char)((unsigned)value >> 24),
                           (unsigned char)((unsigned)value >> 16),
                           (unsigned char)((unsigned)value >> 8), (unsigned char)value };

    relay_send(kind, n, sizeof(n));
}

/* Start the spare of the next command: a new cgroup below the kill root, and a
 * forked child in spare mode that joins it and waits for its order. */
static int relay_prepare(struct relay_spare *s, int userns, const char *caps, uid_t uid,
                         gid_t gid)
{
    static unsigned serial;
    int order[2], error[2], out[2];
    pid_t pid;

    s->group = -1;
    s->name[0] = '\0';
    if (relay_root >= 0) {
        snprintf(s->name, sizeof(s->name), "r%d-%u", (int)getpid(), serial++);
        if (mkdirat(relay_root, s->name, 0755) != 0)
            return -1;
        s->group = openat(relay_root, s->name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->group < 0) {
            unlinkat(relay_root, s->name, AT_REMOVEDIR);
            return -1;
        }
    }
    if (pipe2(order, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(error, O_CLOEXEC) != 0) {
        close(order[0]);
        close(order[1]);
        return -1;
    }
    out[0] = out[1] = -1;
    if (pipe2(out, O_CLOEXEC) != 0 ||
        ((userns >= 0 || geteuid() == 0) && fchown(out[0], uid, gid) != 0)) {
        /* (the user's own pipe, as the agent makes it: its process can reopen
         * /dev/stdout and /dev/stderr) */
        int opened[6] = { order[0], order[1], error[0], error[1], out[0], out[1] };

        for (int i = 0; i < 6; i++)
            if (opened[i] >= 0)
                close(opened[i]);
        return -1;
    }
    pid = fork();
    if (pid == 0) { /* the spare: this process, not a new one exec'd (0.15 ms less) */
        char a[5][16], *args[8];

        snprintf(a[0], sizeof(a[0]), "%d", order[0]);
        snprintf(a[1], sizeof(a[1]), "%d", error[1]);
        snprintf(a[2], sizeof(a[2]), "%d", out[1]);
        snprintf(a[3], sizeof(a[3]), "%d", userns);
        snprintf(a[4], sizeof(a[4]), "%d", s->group);
        args[0] = a[0];
        args[1] = a[1];
        args[2] = a[2];
        args[3] = a[2]; /* (stderr: the same pipe) */
        args[4] = a[3];
        args[5] = s->group >= 0 ? a[4] : "";
        args[6] = (char *)caps;
        args[7] = NULL;
        _exit(spare_main(args));
    }
    close(order[0]);
    close(error[1]);
    close(out[1]);
    if (pid < 0) {
        close(order[1]);
        close(error[0]);
        close(out[0]);
        return -1;
    }
    s->pid = pid;
    s->order = order[1];
    s->error = error[0];
    s->out = out[0];
    return 0;
}

/* Remove the cgroups of commands that are over (those whose processes left behind
 * still run stay, and are tried again after the next command). */
static void relay_tidy(char left[][48], int *nleft)
{
    int kept = 0;

    for (int i = 0; i < *nleft; i++)
        if (unlinkat(relay_root, left[i], AT_REMOVEDIR) != 0 && errno == EBUSY)
            memcpy(left[kept++], left[i], 48);
    *nleft = kept;
}

/* The spare's order (see spare mode): the user, the command, its directory and env. */
static char *relay_spare_order(uid_t uid, gid_t gid, char **groups, size_t ngroups,
                               const char *cwd, const char *command, char **env,
                               size_t *size)
{
    size_t cap = 256;
    char num[32], *buf, *at;

    for (size_t i = 0; i < ngroups; i++)
        cap += strlen(groups[i]) + 1;
    for (char **e = env; *e; e++)
        cap += strlen(*e) + 1;
    cap += strlen(cwd) + strlen(command) + 64;
    buf = malloc(cap);
    if (buf == NULL)
        return NULL;
    at = buf;
#define RELAY_PUT(s) do { size_t n_ = strlen(s) + 1; memcpy(at, (s), n_); at += n_; } while (0)
    snprintf(num, sizeof(num), "%u", (unsigned)uid);
    RELAY_PUT(num);
    snprintf(num, sizeof(num), "%u", (unsigned)gid);
    RELAY_PUT(num);
    RELAY_PUT("1");
    RELAY_PUT(cwd);
    snprintf(num, sizeof(num), "%zu", ngroups);
    RELAY_PUT(num);
    for (size_t i = 0; i < ngroups; i++)
        RELAY_PUT(groups[i]);
    RELAY_PUT("3");
    RELAY_PUT("/bin/sh");
    RELAY_PUT("-c");
    RELAY_PUT(command);
    {
        size_t n = 0;

        for (char **e = env; *e; e++)
            n++;
        snprintf(num, sizeof(num), "%zu", n);
        RELAY_PUT(num);
    }
    for (char **e = env; *e; e++)
        RELAY_PUT(*e);
#undef RELAY_PUT
    *size = (size_t)(at - buf);
    return buf;
}

static int relay_main(char **argv)
{
    int control, userns, nleft = 0, ndrains = 0, drains[RELAY_DRAINS];
    char *setup, *setup_end, *cwd_default, *passwd, *group;
    char **groups, **checks, **base;
    size_t ngroups, nchecks, nbase;
    long wait_s;
    uid_t uid;
    gid_t gid;
    sigset_t none;
    struct relay_spare next = { .pid = -1 };
    static char left[RELAY_LEFT][48];
    static char chunk[RELAY_CHUNK];

    for (int i = 0; i < 6; i++)
        if (argv[i] == NULL)
            return 2;
    relay_conn = atoi(argv[0]);
    control = atoi(argv[1]);
    userns = atoi(argv[2]);
    relay_root = atoi(argv[3]);
    {
        int keep[64] = { relay_conn, control, userns, relay_root };
        int n = 4;

        for (const char *p = argv[4]; *p && n < 64; n++) {
            keep[n] = atoi(p);
            p = strchrnul(p, ',');
            if (*p == ',')
                p++;
        }
        spare_close_others(keep, n);
    }
    fcntl(relay_conn, F_SETFD, FD_CLOEXEC);
    fcntl(control, F_SETFD, FD_CLOEXEC);
    if (userns >= 0)
        fcntl(userns, F_SETFD, FD_CLOEXEC);
    if (relay_root >= 0)
        fcntl(relay_root, F_SETFD, FD_CLOEXEC);
    /* (the agent's event loop made the connection non-blocking: this relay blocks) */
    fcntl(relay_conn, F_SETFL, fcntl(relay_conn, F_GETFL) & ~O_NONBLOCK);
    for (const char *p = argv[4]; *p;) {
        int dir = atoi(p);
        int fd = openat(dir, "cgroup.procs", O_WRONLY | O_CLOEXEC);

        if (fd < 0 || write(fd, "0", 1) != 1)
            relay_quit(0);
        close(fd);
        close(dir);
        p = strchrnul(p, ',');
        if (*p == ',')
            p++;
    }
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    signal(SIGPIPE, SIG_IGN); /* (a server gone: EPIPE, see relay_send) */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    setup = relay_message(control, RELAY_SETUP_MAX, &setup_end);
    {
        char *at = setup;

        uid = (uid_t)atol(relay_field(&at, setup_end));
        gid = (gid_t)atol(relay_field(&at, setup_end));
        groups = relay_list(&at, setup_end, &ngroups);
        cwd_default = relay_field(&at, setup_end);
        passwd = relay_field(&at, setup_end);
        group = relay_field(&at, setup_end);
        checks = relay_list(&at, setup_end, &nchecks);
        wait_s = atol(relay_field(&at, setup_end));
        base = relay_list(&at, setup_end, &nbase);
    }
    relay_send('R', NULL, 0);
    relay_ready = 1;

    for (;;) {
        struct pollfd fds[3 + RELAY_DRAINS];
        char *order, *order_end, *at, *cwd, *command, **extra, **env, *spare_order;
        size_t nextra, limit, head, spare_size;
        long long timeout_ms, deadline = -1, drain_until = -1;
        int pidfd, status = 0, done = 0, failure = 0, out, ready;
        struct relay_tail tail = { 0 };

        if (next.pid < 0 && relay_prepare(&next, userns, argv[5], uid, gid) != 0)
            relay_quit(0);
        /* The next order, unless CONTROL ends or the wait does first. */
        fds[0] = (struct pollfd){ .fd = relay_conn, .events = POLLIN };
        fds[1] = (struct pollfd){ .fd = control, .events = POLLIN };
        for (int i = 0; i < ndrains; i++)
            fds[2 + i] = (struct pollfd){ .fd = drains[i], .events = POLLIN };
        ready = poll(fds, (nfds_t)(2 + ndrains), wait_s > 0 ? (int)(wait_s * 1000) : -1);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0 || fds[1].revents)
            relay_quit(0);
        for (int i = ndrains - 1; i >= 0; i--) { /* what processes left behind print */
            if (!fds[2 + i].revents)
                continue;
            if (read(drains[i], chunk, sizeof(chunk)) <= 0) {
                close(drains[i]);
                drains[i] = drains[--ndrains];
            }
        }
        if (!fds[0].revents)
            continue;
        order = relay_message(relay_conn, RELAY_ORDER_MAX, &order_end);
        if (poll(&fds[1], 1, 0) != 0) /* the agent let it go meanwhile */
            relay_quit(0);
        at = order;
        cwd = relay_field(&at, order_end);
        timeout_ms = atoll(relay_field(&at, order_end));
        limit = (size_t)atoll(relay_field(&at, order_end));
        extra = relay_list(&at, order_end, &nextra);
        command = relay_field(&at, order_end);
        if (!*cwd)
            cwd = cwd_default;
        if (!relay_still(passwd, group, checks, nchecks) || !relay_is_dir(cwd))
            relay_quit(0); /* the agent's way finds what changed (and answers an error) */
        env = calloc(nbase + nextra + 1, sizeof(char *));
        if (env == NULL)
            relay_quit(0);
        memcpy(env, base, nbase * sizeof(char *));
        relay_merge(env, nbase, extra, nextra);
        spare_order = relay_spare_order(uid, gid, groups, ngroups, cwd, command, env,
                                        &spare_size);
        if (spare_order == NULL)
            relay_quit(0);
        if (limit) {
            tail.keep = limit / 2;
            tail.buf = malloc(tail.keep ? tail.keep : 1);
            if (tail.buf == NULL)
                relay_quit(0);
        }
        head = limit ? limit - limit / 2 : (size_t)-1;
        if (waitpid(next.pid, NULL, WNOHANG) == next.pid) { /* its spare died waiting */
            close(next.order);
            close(next.error);
            close(next.out);
            if (next.group >= 0) {
                close(next.group);
                if (nleft < RELAY_LEFT)
                    memcpy(left[nleft++], next.name, sizeof(next.name));
            }
            if (relay_prepare(&next, userns, argv[5], uid, gid) != 0)
                relay_quit(0);
        }
        pidfd = (int)syscall(SYS_pidfd_open, next.pid, 0);
        if (pidfd < 0)
            relay_quit(0);

        /* Taken: from here on the command is under way (no more N). */
        relay_ready = 0;
        relay_child = next.pid;
        relay_group = next.group;
        out = next.out;
        if (relay_write_all(next.order, spare_order, spare_size) != 0)
            failure = EIO; /* (the spare died: its exit says more, below) */
        close(next.order);
        free(spare_order);
        free(env);
        free(extra);
        free(order);
        if (timeout_ms > 0)
            deadline = relay_now_ms() + timeout_ms;
        fds[0] = (struct pollfd){ .fd = out, .events = POLLIN };
        fds[1] = (struct pollfd){ .fd = relay_conn, .events = POLLIN };
        fds[2] = (struct pollfd){ .fd = pidfd, .events = POLLIN };
        for (;;) {
            long long now = relay_now_ms(), until = drain_until >= 0 ? drain_until : deadline;
            int wait_ms = until < 0 ? -1 : (until > now ? (int)(until - now) : 0);

            if (out < 0 && done)
                break;
            ready = poll(fds, 3, wait_ms);
            if (ready < 0 && errno == EINTR)
                continue;
            if (ready < 0)
                relay_quit(1);
            if (ready == 0) {
                if (done)
                    break; /* drained for RELAY_DRAIN_MS: processes left behind hold the pipe */
                relay_kill(relay_group, relay_child);
                waitpid(relay_child, NULL, 0);
                relay_child = -1;
                relay_send('T', NULL, 0);
                if (out >= 0)
                    close(out);
                out = -1;
                done = -1;
                break;
            }
            if (fds[1].revents) /* the server hung up (or sent what it must not) */
                relay_quit(1);
            if (fds[0].revents) {
                ssize_t got = read(out, chunk, sizeof(chunk));

                if (got > 0)
                    relay_output(&tail, &head, chunk, (size_t)got);
                else if (got == 0 || errno != EINTR) {
                    close(out);
                    out = -1;
                    fds[0].fd = -1;
                }
            }
            if (fds[2].revents && !done) {
                if (waitpid(relay_child, &status, 0) != relay_child)
                    status = 0;
                relay_child = -1;
                done = 1;
                fds[2].fd = -1;
                drain_until = relay_now_ms() + RELAY_DRAIN_MS;
            }
        }
        close(pidfd);
        if (done == 1) {
            int report[2];

            if (read(next.error, report, sizeof(report)) >= (ssize_t)sizeof(int))
                failure = report[0] ? report[0] : EIO;
            relay_flush(&tail);
            if (failure)
                relay_int('F', failure);
            else
                relay_int('X', WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                                   : WEXITSTATUS(status));
        }
        free(tail.buf);
        close(next.error);
        if (out >= 0) { /* processes left behind hold it: read and drop what they print */
            if (ndrains < RELAY_DRAINS)
                drains[ndrains++] = out;
            else
                close(out);
        }
        if (next.group >= 0) {
            close(next.group);
            if (nleft < RELAY_LEFT)
                memcpy(left[nleft++], next.name, sizeof(next.name));
        }
        relay_group = -1;
        next.pid = -1;
        relay_ready = 1;
        /* The answer just sent woke the server, often onto this CPU: let it send the
         * answer on before the next spare is made (as the agent's spares, spare.py). */
        sched_yield();
        if (relay_root >= 0)
            relay_tidy(left, &nleft);
    }
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "--spare") == 0)
        return spare_main(argv + 2);
    if (argc > 2 && strcmp(argv[1], "--relay") == 0)
        return relay_main(argv + 2);
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
