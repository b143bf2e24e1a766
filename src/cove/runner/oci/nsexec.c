/*
 * cove-nsexec: the namespace and mount steps of bringing a sandbox up that
 * need a process inside another user namespace. Cove runs it as root on the
 * host, once per start, with one or more steps separated by ";" arguments:
 *
 *   userns PATH MAP OWNER
 *       a new user namespace (child of the host's) with MAP as its uid and
 *       gid map, owned by the host's uid OWNER (see below), kept alive by a
 *       bind mount of its nsfs file on PATH.
 *   childns PARENT PATH UID MAP
 *       a user namespace nested in the one bound at PARENT, owned by PARENT's
 *       UID (so that a process of that uid in PARENT has every capability in
 *       it), MAP relative to PARENT; bound on PATH.
 *   netns USERNS PATH [NAME=VALUE ...]
 *       a network namespace owned by the user namespace bound at USERNS (so
 *       that a sysfs mount in the sandbox shows its own devices), its loopback
 *       up and the given net.* sysctls set inside it; bound on PATH.
 *   overlay USERNS TARGET LOWER UPPER WORK
 *       an overlay file system mounted by root of the user namespace bound at
 *       USERNS (so its upper layer is written with that namespace's ids and
 *       its xattrs are user.overlay.*), nosuid and nodev, attached at TARGET.
 *       The layers are opened before the mount and given to overlayfs as
 *       /proc/self/fd/N, so neither the host's path names nor any symlink can
 *       steer them, and the sandbox's mountinfo shows no host path.
 *
 * Signals a process of a user namespace queues (a POSIX timer holds one) are
 * charged to its uid there and to the namespace's owner in its parent, up to
 * the host's user namespace; each count is bounded, for what passes it, by the
 * RLIMIT_SIGPENDING the namespace's creator had when it was made (likewise
 * RLIMIT_MSGQUEUE for POSIX message queues, RLIMIT_MEMLOCK for locked shared
 * memory, RLIMIT_NPROC for processes). So:
 *   - userns makes a sandbox's namespace as OWNER, a host uid of the sandbox's
 *     own that no process keeps (its helper takes it to make the namespace, then
 *     exits; the sandbox maps it nowhere): what the sandbox is charged on the
 *     host is its own count. Owned by root, as it was, every sandbox's charges
 *     and root's shared one: nine message queues in one sandbox left none to
 *     open in any other.
 *   - It does so with these limits as high as root may set them, which bound
 *     the count on the host;
 *   - childns, the workload's, with RLIMIT_SIGPENDING at most
 *     SANDBOX_SIGPENDING, which bounds the count of the sandbox's whole workload
 *     (its RLIMIT_MSGQUEUE stays the server's: 800 KiB by default).
 *
 * A MAP is INSIDE:OUTSIDE:COUNT[,INSIDE:OUTSIDE:COUNT...]. Every PATH must be
 * an existing empty file (or directory, for TARGET). On failure it prints one
 * line naming the step and exits non-zero; steps already done stay done (the
 * caller tears a failed start down as a whole).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* fsopen, fsconfig, fsmount and move_mount come from glibc 2.36's <sys/mount.h>. */

static const char *step = "cove-nsexec";

/* The signals all of a sandbox's workload may have queued (see the header). */
#define SANDBOX_SIGPENDING 1024

static void die(const char *fmt, ...)
{
    va_list ap;
    int err = errno;

    fprintf(stderr, "%s: ", step);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, ": %s\n", strerror(err));
    exit(1);
}

static void wait_for(int fd)
{
    char c;

    if (read(fd, &c, 1) != 1) {
        errno = ECHILD;
        die("helper process failed");
    }
}

static void reap(pid_t pid)
{
    int status;

    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    size_t n = strlen(text);

    if (fd < 0 || write(fd, text, n) != (ssize_t)n)
        die("write %s", path);
    close(fd);
}

/* "0:1000:65536,65536:2000:1" -> "0 1000 65536\n65536 2000 1\n" */
static void map_text(const char *map, char *out, size_t size)
{
    size_t n = 0;

    for (const char *p = map; *p && n + 2 < size; p++)
        out[n++] = *p == ':' ? ' ' : *p == ',' ? '\n' : *p;
    out[n++] = '\n';
    out[n] = 0;
}

static void write_maps(pid_t pid, const char *map)
{
    char path[64], text[512];

    map_text(map, text, sizeof text);
    snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
    write_file(path, text);
    snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
    write_file(path, text);
}

static void bind_ns(pid_t pid, const char *kind, const char *path)
{
    char source[64];

    snprintf(source, sizeof source, "/proc/%d/ns/%s", pid, kind);
    if (mount(source, path, NULL, MS_BIND, NULL) != 0)
        die("bind %s on %s", source, path);
}

static void join_userns(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || setns(fd, CLONE_NEWUSER) != 0)
        die("join user namespace %s", path);
    close(fd);
}

static void become(uid_t id)
{
    if (setgroups(0, NULL) != 0 || setresgid(id, id, id) != 0 || setresuid(id, id, id) != 0)
        die("become %u", id);
}

/* A process that entered (or made) namespaces, kept alive until released. */
struct holder {
    pid_t pid;
    int done; /* closing it releases the process */
};

/* Fork a process that runs enter(a, n), then waits until released. */
static struct holder hold(void (*enter)(char **, int), char **a, int n)
{
    int ready[2], done[2];
    struct holder h;
    char c = 1;

    if (pipe2(ready, O_CLOEXEC) || pipe2(done, O_CLOEXEC))
        die("pipe");
    h.pid = fork();
    if (h.pid < 0)
        die("fork");
    if (h.pid == 0) {
        close(ready[0]);
        close(done[1]);
        enter(a, n);
        if (write(ready[1], &c, 1) != 1)
            _exit(1);
        (void)read(done[0], &c, 1);
        _exit(0);
    }
    close(ready[1]);
    close(done[0]);
    wait_for(ready[0]);
    close(ready[0]);
    h.done = done[1];
    return h;
}

static void release(struct holder h)
{
    close(h.done);
    reap(h.pid);
}

/* Raise the limits a user namespace made next takes as bounds (see the header) as
 * far as this process may (past the hard limit only with CAP_SYS_RESOURCE). */
static void raise_charge_bounds(void)
{
    const int kinds[] = { RLIMIT_SIGPENDING, RLIMIT_MSGQUEUE, RLIMIT_MEMLOCK };

    for (int i = 0; i < 3; i++) {
        struct rlimit limit = { RLIM_INFINITY, RLIM_INFINITY };

        if (setrlimit(kinds[i], &limit) != 0 && getrlimit(kinds[i], &limit) == 0) {
            limit.rlim_cur = limit.rlim_max;
            setrlimit(kinds[i], &limit);
        }
    }
}

static void enter_new_userns(char **a, int n)
{
    (void)a;
    (void)n;
    if (unshare(CLONE_NEWUSER) != 0)
        die("unshare");
}

/* A user namespace owned by a[2], bounding what is in it no lower than root's
 * own limits do. */
static void enter_unbounded_userns(char **a, int n)
{
    raise_charge_bounds();
    become((uid_t)strtoul(a[2], NULL, 10));
    enter_new_userns(a, n);
}

/* As uid a[2] of the user namespace it is in, make a nested one (a[2] owns it),
 * whose signals are bounded as one sandbox's. */
static void enter_owned_userns(char **a, int n)
{
    struct rlimit limit;

    (void)n;
    become((uid_t)strtoul(a[2], NULL, 10));
    if (getrlimit(RLIMIT_SIGPENDING, &limit) != 0)
        die("get RLIMIT_SIGPENDING");
    if (limit.rlim_max > SANDBOX_SIGPENDING)
        limit.rlim_max = SANDBOX_SIGPENDING;
    if (limit.rlim_cur > limit.rlim_max)
        limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_SIGPENDING, &limit) != 0)
        die("bound RLIMIT_SIGPENDING");
    enter_new_userns(a, n);
}

static void do_userns(char **a)
{
    struct holder h = hold(enter_unbounded_userns, a, 3);

    write_maps(h.pid, a[1]);
    bind_ns(h.pid, "user", a[0]);
    release(h);
}

static void do_childns(char **a)
{
    int up[2], bound[2];
    pid_t helper, inner = 0;

    if (pipe2(up, O_CLOEXEC) || pipe2(bound, O_CLOEXEC))
        die("pipe");
    helper = fork();
    if (helper < 0)
        die("fork");
    if (helper == 0) {
        /* In the parent namespace (every capability there): the creator, its map. */
        struct holder creator;

        close(up[0]);
        close(bound[1]);
        join_userns(a[0]);
        creator = hold(enter_owned_userns, a, 4);
        write_maps(creator.pid, a[3]);
        if (write(up[1], &creator.pid, sizeof creator.pid) != sizeof creator.pid)
            _exit(1);
        wait_for(bound[0]);
        release(creator);
        _exit(0);
    }
    close(up[1]);
    close(bound[0]);
    if (read(up[0], &inner, sizeof inner) != sizeof inner) {
        errno = ECHILD;
        die("nested user namespace not made");
    }
    bind_ns(inner, "user", a[1]);
    if (write(bound[1], "1", 1) != 1)
        die("release the creator");
    reap(helper);
}

static void set_sysctl(const char *assignment)
{
    char path[256], *value = strchr(assignment, '=');
    size_t n;

    if (value == NULL || (size_t)(value - assignment) >= sizeof path - 10) {
        errno = EINVAL;
        die("sysctl %s", assignment);
    }
    n = snprintf(path, sizeof path, "/proc/sys/%.*s", (int)(value - assignment), assignment);
    for (size_t i = 10; i < n; i++)
        if (path[i] == '.')
            path[i] = '/';
    write_file(path, value + 1);
}

static void loopback_up(void)
{
    struct ifreq req = { 0 };
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    strcpy(req.ifr_name, "lo");
    if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &req) != 0)
        die("loopback");
    req.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &req) != 0)
        die("loopback up");
    close(fd);
}

static void enter_netns(char **a, int n)
{
    join_userns(a[0]);
    if (unshare(CLONE_NEWNET) != 0)
        die("unshare");
    loopback_up();
    for (int i = 2; i < n; i++)
        set_sysctl(a[i]);
}

static void do_netns(char **a, int n)
{
    struct holder h = hold(enter_netns, a, n);

    bind_ns(h.pid, "net", a[1]);
    release(h);
}

static void send_fd(int sock, int fd)
{
    char byte = 0, buf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { &byte, 1 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf,
                          .msg_controllen = sizeof buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(sock, &msg, 0) != 1)
        die("send mount");
}

static int recv_fd(int sock)
{
    char byte, buf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { &byte, 1 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf,
                          .msg_controllen = sizeof buf };
    struct cmsghdr *c;
    int fd;

    if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1 || (c = CMSG_FIRSTHDR(&msg)) == NULL ||
        c->cmsg_type != SCM_RIGHTS)
        return -1;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

static void fs_string(int fs, const char *key, int fd)
{
    char value[32];

    snprintf(value, sizeof value, "/proc/self/fd/%d", fd);
    if (fsconfig(fs, FSCONFIG_SET_STRING, key, value, 0) != 0)
        die("overlay %s", key);
}

/* In the sandbox's user namespace: the overlay as a detached mount, sent back. */
static void make_overlay(char **a, int sock)
{
    static const char *keys[] = { "lowerdir", "upperdir", "workdir" };
    int fds[3], fs, mnt;

    join_userns(a[0]);
    if (unshare(CLONE_NEWNS) != 0)
        die("unshare");
    for (int i = 0; i < 3; i++) {
        fds[i] = open(a[2 + i], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fds[i] < 0)
            die("open %s", a[2 + i]);
    }
    become(0);
    fs = fsopen("overlay", FSOPEN_CLOEXEC);
    if (fs < 0)
        die("fsopen overlay");
    for (int i = 0; i < 3; i++)
        fs_string(fs, keys[i], fds[i]);
    if (fsconfig(fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) != 0 ||
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0)
        die("overlay create");
    mnt = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    if (mnt < 0)
        die("fsmount overlay");
    send_fd(sock, mnt);
    _exit(0);
}

static void do_overlay(char **a)
{
    int pair[2], mnt;
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
        die("socketpair");
    pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(pair[0]);
        make_overlay(a, pair[1]);
    }
    close(pair[1]);
    mnt = recv_fd(pair[0]);
    reap(pid);
    if (mnt < 0) {
        errno = ECHILD;
        die("overlay not made");
    }
    if (move_mount(mnt, "", AT_FDCWD, a[1], MOVE_MOUNT_F_EMPTY_PATH) != 0)
        die("attach overlay at %s", a[1]);
    close(mnt);
}

static void run_step(char **a, int n)
{
    step = a[0];
    if (strcmp(a[0], "userns") == 0 && n == 4)
        do_userns(a + 1);
    else if (strcmp(a[0], "childns") == 0 && n == 5)
        do_childns(a + 1);
    else if (strcmp(a[0], "netns") == 0 && n >= 3)
        do_netns(a + 1, n - 1);
    else if (strcmp(a[0], "overlay") == 0 && n == 6)
        do_overlay(a + 1);
    else {
        errno = EINVAL;
        die("unknown step or wrong arguments");
    }
}

int main(int argc, char **argv)
{
    int start = 1;

    for (int i = 1; i <= argc; i++) {
        if (i == argc || strcmp(argv[i], ";") == 0) {
            if (i > start)
                run_step(argv + start, i - start);
            start = i + 1;
        }
    }
    return 0;
}
