# Every call that changes file metadata, made on one file (landjail_metadata.rs): `ops.py MODE
# FILE DIR GID` prints `OK <call>` or `ERR <call> <errno> <text>` per call (`SKIP` where the
# architecture lacks it). The file must carry user.keep1..3; GID is a group of the caller.
# `fssetxattr`, `setxattrat` and the `setid-` calls are refused everywhere in landjail.
# MODE `attack` also tries a hard link of FILE into the working directory, and a chmod through
# a symbolic link made there.
import ctypes, fcntl, os, platform, struct, sys

NR = {
    "x86_64": dict(chmod=90, fchmod=91, chown=92, fchown=93, lchown=94, utime=132, utimes=235,
                   setxattr=188, lsetxattr=189, fsetxattr=190, removexattr=197,
                   lremovexattr=198, fremovexattr=199, fchownat=260, futimesat=261,
                   fchmodat=268, utimensat=280, fchmodat2=452, setxattrat=463, openat=257,
                   creat=85, mknodat=259, openat2=437),
    "aarch64": dict(setxattr=5, lsetxattr=6, fsetxattr=7, removexattr=14, lremovexattr=15,
                    fremovexattr=16, fchmod=52, fchmodat=53, fchownat=54, fchown=55,
                    utimensat=88, fchmodat2=452, setxattrat=463, openat=56, mknodat=33,
                    openat2=437),
}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
AT_FDCWD, NOFOLLOW, EMPTY = -100, 0x100, 0x1000
L = ctypes.c_long

def sc(name, *args):
    if name not in NR:
        return None
    a = [L(x) if isinstance(x, int) else x for x in args]
    r = libc.syscall(L(NR[name]), *a)
    return 0 if r >= 0 else ctypes.get_errno()

def b(s):
    return ctypes.c_char_p(s.encode())

def pairs(*v):
    return ctypes.create_string_buffer(struct.pack("%dq" % len(v), *v), 8 * len(v))

def ioctl(fd, get, put, size, change):
    """Reads attributes with `get`, writes them back changed with `put`: 0 or the errno."""
    buf = bytearray(size)
    try:
        fcntl.ioctl(fd, get, buf, True)
        fcntl.ioctl(fd, put, bytes(change(buf)))
        return 0
    except OSError as e:
        return e.errno

def noatime(buf):  # FS_NOATIME_FL, what `chattr +A` sets
    return struct.pack("i", struct.unpack("i", buf[:4])[0] | 0x80)

ACL = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, 6, 0xffffffff) for t in (1, 4, 0x20))

def ops(p, d, g):
    ro = os.open(p, os.O_RDONLY)
    op = os.open(p, os.O_PATH)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    base = os.path.basename(p)
    xa = pairs(0, 0)  # struct xattr_args: value pointer, size, flags
    return [
        ("chmod", lambda: sc("chmod", b(p), 0o755)),
        ("fchmodat", lambda: sc("fchmodat", AT_FDCWD, b(p), 0o666)),
        ("fchmodat2", lambda: sc("fchmodat2", AT_FDCWD, b(p), 0o600, 0)),
        ("fchmodat2-empty-path", lambda: sc("fchmodat2", op, b(""), 0o640, EMPTY)),
        ("fchmod-read-only-fd", lambda: sc("fchmod", ro, 0o606)),
        ("fchmodat-dirfd", lambda: sc("fchmodat", dfd, b(base), 0o660)),
        ("chmod-proc-self-fd", lambda: sc("fchmodat", AT_FDCWD, b("/proc/self/fd/%d" % ro), 0o777)),
        ("chmod-dir", lambda: sc("fchmodat", AT_FDCWD, b(d), 0o777)),
        ("chown", lambda: sc("chown", b(p), -1, g)),
        ("lchown", lambda: sc("lchown", b(p), -1, g)),
        ("fchown-read-only-fd", lambda: sc("fchown", ro, -1, g)),
        ("fchownat", lambda: sc("fchownat", AT_FDCWD, b(p), -1, g, 0)),
        ("fchownat-empty-path", lambda: sc("fchownat", op, b(""), -1, g, EMPTY)),
        ("utime", lambda: sc("utime", b(p), pairs(11, 11))),
        ("utimes", lambda: sc("utimes", b(p), pairs(12, 0, 12, 0))),
        ("futimesat", lambda: sc("futimesat", AT_FDCWD, b(p), pairs(13, 0, 13, 0))),
        ("utimensat", lambda: sc("utimensat", AT_FDCWD, b(p), pairs(14, 0, 14, 0), 0)),
        ("futimens-read-only-fd", lambda: sc("utimensat", ro, None, pairs(15, 0, 15, 0), 0)),
        ("utimensat-now-nofollow", lambda: sc("utimensat", AT_FDCWD, b(p), None, NOFOLLOW)),
        ("setxattr", lambda: sc("setxattr", b(p), b("user.evil1"), b("1"), 1, 0)),
        ("lsetxattr", lambda: sc("lsetxattr", b(p), b("user.evil2"), b("1"), 1, 0)),
        ("fsetxattr-read-only-fd", lambda: sc("fsetxattr", ro, b("user.evil3"), b("1"), 1, 0)),
        ("removexattr", lambda: sc("removexattr", b(p), b("user.keep1"))),
        ("lremovexattr", lambda: sc("lremovexattr", b(p), b("user.keep2"))),
        ("fremovexattr-read-only-fd", lambda: sc("fremovexattr", ro, b("user.keep3"))),
        ("setxattr-acl", lambda: sc("setxattr", b(p), b("system.posix_acl_access"),
                                    ctypes.c_char_p(ACL), len(ACL), 0)),
        ("setflags-read-only-fd", lambda: ioctl(ro, 0x80086601, 0x40086602, 4, noatime)),
        ("fssetxattr-read-only-fd", lambda: ioctl(ro, 0x801c581f, 0x401c5820, 28, bytes)),
        ("setxattrat", lambda: sc("setxattrat", AT_FDCWD, b(p), 0, b("user.evil4"), xa, 16)),
    ]

def setid_ops(p, mode):
    """Setuid and setgid bits, refused everywhere in landjail: on FILE, and on new files in the
    working directory."""
    new = lambda what: b(os.path.join(os.getcwd(), "setid-%s-%s" % (what, mode)))
    ro = os.open(p, os.O_RDONLY)
    creating = os.O_CREAT | os.O_WRONLY
    how = ctypes.create_string_buffer(struct.pack("QQQ", creating, 0o4755, 0), 24)
    return [
        ("setid-chmod-setuid", lambda: sc("fchmodat", AT_FDCWD, b(p), 0o4755)),
        ("setid-fchmod-setgid", lambda: sc("fchmod", ro, 0o2755)),
        ("setid-openat-create", lambda: sc("openat", AT_FDCWD, new("openat"), creating, 0o4755)),
        ("setid-creat", lambda: sc("creat", new("creat"), 0o4755)),
        ("setid-mknodat", lambda: sc("mknodat", AT_FDCWD, new("mknod"), 0o100000 | 0o4755, 0)),
        ("setid-openat2-create", lambda: sc("openat2", AT_FDCWD, new("openat2"), how, 24)),
    ]

def main():
    mode, p, d, g = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    for name, f in ops(p, d, g) + setid_ops(p, mode):
        r = f()
        if r is None:
            print("SKIP %s (no such syscall on %s)" % (name, platform.machine()))
        elif r == 0:
            print("OK %s" % name)
        else:
            print("ERR %s %d %s" % (name, r, os.strerror(r)))
    if mode == "attack":
        here = os.path.join(os.getcwd(), "hardlink")
        try:
            os.link(p, here)
            print("OK link-into-cwd")
        except OSError as e:
            print("ERR link-into-cwd %d %s" % (e.errno, e.strerror))
        link = os.path.join(os.getcwd(), "symlink")
        os.symlink(p, link)
        r = sc("fchmodat", AT_FDCWD, b(link), 0o777)
        print("OK chmod-through-symlink" if r == 0 else "ERR chmod-through-symlink %d" % r)

main()
