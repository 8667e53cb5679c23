#!/usr/bin/env python3
"""Local mirrors of public package registries and GitHub for the preset tests
(integration/tests/presets.rs). Stdlib only.

One HTTPS server on a loopback address of its own, port 443 (and the same over plain HTTP on
port 80, for apt), with a certificate for every name
given, issued by a CA made here with openssl (`DIR/ca.pem`, given to boundary as
--upstream-ca-file). boundary maps the real names to it with --resolve, so npm, pip, cargo and
git run unmodified against their default hosts. Before listening it writes, under
`DIR/www/HOST/...`, one tiny package per client, laid out as the real service serves it:

- registry.npmjs.org: the package document `/tinypkg` (JSON) and its tarball
  `/tinypkg/-/tinypkg-1.0.0.tgz`, with the sha512 integrity npm checks;
- pypi.org and files.pythonhosted.org: the simple index page `/simple/tinypkg/` (PEP 503)
  linking to the wheel on files.pythonhosted.org, with its sha256;
- index.crates.io and static.crates.io: the sparse index (`/config.json`, `/ti/ny/tinycrate`)
  and the crate file at `/crates/tinycrate/0.1.0/download`, with the sha256 cargo checks;
- github.com: the repository `/example/tiny.git`, served over git's dumb HTTP protocol;
- deb.debian.org and security.debian.org, archive.ubuntu.com and security.ubuntu.com: apt
  repositories (`/debian`, `/debian-security`, `/ubuntu`: an unsigned `Release`, a
  `Packages` index and the package `tinypkg` built with dpkg-deb), over plain HTTP on port 80
  as apt's default sources use them;
- registry-1.docker.io, auth.docker.io and production.cloudflare.docker.com: the image
  `library/tiny:latest` as Docker Hub serves it: the registry answers 401 naming the token
  service at auth.docker.io, takes the bearer token, serves the manifest, and redirects blob
  downloads to the CDN host;
- proxy.golang.org: the module `example.com/tiny` v1.0.0 in the GOPROXY protocol
  (`/example.com/tiny/@v/list`, `.info`, `.mod`, `.zip`).

A path whose file is a directory is answered with the directory's `_index` file. Query strings
are ignored (git's `info/refs?service=...` gets the plain file, so git falls back to dumb HTTP).
Every request is appended to `DIR/requests.jsonl` (host, method, path, status).
Usage: mirror.py DIR ADDR NAME... ; prints `READY` when listening.
"""

import base64
import hashlib
import http.server
import io
import json
import os
import ssl
import subprocess
import sys
import tarfile
import threading
import zipfile

DIR = sys.argv[1]
ADDR = sys.argv[2]
NAMES = sys.argv[3:]
WWW = os.path.join(DIR, "www")
LOCK = threading.Lock()


def run(*args, **kw):
    subprocess.run(list(args), check=True, capture_output=True, **kw)


def make_certs():
    ca_key, ca = os.path.join(DIR, "ca.key"), os.path.join(DIR, "ca.pem")
    key, csr, leaf = (os.path.join(DIR, n) for n in ("leaf.key", "leaf.csr", "leaf.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("openssl", "req", "-x509", *ec, "-days", "2", "-subj", "/CN=boundary mirror CA",
        "-keyout", ca_key, "-out", ca)
    run("openssl", "req", *ec, "-subj", "/CN=" + NAMES[0], "-keyout", key, "-out", csr)
    ext = os.path.join(DIR, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=" + ",".join("DNS:" + n for n in NAMES) + "\n")
        f.write("extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-days", "2", "-in", csr, "-CA", ca, "-CAkey", ca_key,
        "-CAcreateserial", "-extfile", ext, "-out", leaf)
    os.chmod(ca, 0o644)
    return leaf, key


def put(host, path, data):
    full = os.path.join(WWW, host, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def tar_gz(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def npm():
    tgz = tar_gz({
        "package/package.json": json.dumps({"name": "tinypkg", "version": "1.0.0",
                                            "main": "index.js"}),
        "package/index.js": "module.exports = 'tinypkg-from-the-mirror';\n",
    })
    url = "https://registry.npmjs.org/tinypkg/-/tinypkg-1.0.0.tgz"
    doc = {
        "name": "tinypkg",
        "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {
            "name": "tinypkg", "version": "1.0.0", "main": "index.js",
            "dist": {
                "tarball": url,
                "shasum": hashlib.sha1(tgz).hexdigest(),
                "integrity": "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode(),
            },
        }},
    }
    put("registry.npmjs.org", "/tinypkg/_index", json.dumps(doc))
    put("registry.npmjs.org", "/tinypkg/-/tinypkg-1.0.0.tgz", tgz)


def pypi():
    name = "tinypkg-1.0-py3-none-any.whl"
    files = {
        "tinypkg/__init__.py": "VALUE = 'tinypkg-from-the-mirror'\n",
        "tinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: mirror\n"
                                       "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        "%s,sha256=%s,%d\n" % (
            n, base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b"=")
            .decode(), len(t))
        for n, t in files.items())
    files["tinypkg-1.0.dist-info/RECORD"] = record + "tinypkg-1.0.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, t in files.items():
            z.writestr(n, t)
    whl = buf.getvalue()
    path = "/packages/00/11/" + name
    put("files.pythonhosted.org", path, whl)
    sha = hashlib.sha256(whl).hexdigest()
    page = ('<!DOCTYPE html><html><body><a href="https://files.pythonhosted.org%s#sha256=%s">'
            '%s</a></body></html>\n' % (path, sha, name))
    put("pypi.org", "/simple/tinypkg/_index", page)


def crates():
    crate = tar_gz({
        "tinycrate-0.1.0/Cargo.toml": '[package]\nname = "tinycrate"\nversion = "0.1.0"\n'
                                      'edition = "2021"\n',
        "tinycrate-0.1.0/src/lib.rs": "pub const VALUE: &str = \"tinycrate-from-the-mirror\";\n",
    })
    put("static.crates.io", "/crates/tinycrate/0.1.0/download", crate)
    put("index.crates.io", "/config.json",
        json.dumps({"dl": "https://static.crates.io/crates", "api": "https://crates.io"}))
    entry = {"name": "tinycrate", "vers": "0.1.0", "deps": [], "features": {},
             "cksum": hashlib.sha256(crate).hexdigest(), "yanked": False}
    put("index.crates.io", "/ti/ny/tinycrate", json.dumps(entry) + "\n")


def github():
    src = os.path.join(DIR, "repo-src")
    bare = os.path.join(WWW, "github.com", "example", "tiny.git")
    run("git", "init", "-q", "-b", "main", src)
    with open(os.path.join(src, "README"), "w") as f:
        f.write("tiny-from-the-mirror\n")
    run("git", "-C", src, "add", "README")
    run("git", "-C", src, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
        "-m", "init")
    os.makedirs(os.path.dirname(bare), exist_ok=True)
    run("git", "clone", "-q", "--bare", src, bare)
    run("git", "-C", bare, "update-server-info")


def go():
    base = "/example.com/tiny/@v/"
    mod = "module example.com/tiny\n\ngo 1.19\n"
    put("proxy.golang.org", base + "list", "v1.0.0\n")
    put("proxy.golang.org", base + "v1.0.0.info",
        json.dumps({"Version": "v1.0.0", "Time": "2024-01-01T00:00:00Z"}))
    put("proxy.golang.org", base + "v1.0.0.mod", mod)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("example.com/tiny@v1.0.0/go.mod", mod)
        z.writestr("example.com/tiny@v1.0.0/tiny.go",
                   "package tiny\n\nconst Value = \"tiny-from-the-mirror\"\n")
    put("proxy.golang.org", base + "v1.0.0.zip", buf.getvalue())


APT_REPOS = [
    ("deb.debian.org", "debian", "bookworm"),
    ("security.debian.org", "debian-security", "bookworm-security"),
    ("archive.ubuntu.com", "ubuntu", "noble"),
    ("security.ubuntu.com", "ubuntu", "noble-security"),
]


def apt():
    pkg = os.path.join(DIR, "deb")
    os.makedirs(os.path.join(pkg, "DEBIAN"))
    os.makedirs(os.path.join(pkg, "usr/share/tinypkg"))
    with open(os.path.join(pkg, "DEBIAN/control"), "w") as f:
        f.write("Package: tinypkg\nVersion: 1.0\nArchitecture: all\n"
                "Maintainer: mirror <m@example.com>\nDescription: a package from the mirror\n")
    with open(os.path.join(pkg, "usr/share/tinypkg/README"), "w") as f:
        f.write("tinypkg-from-the-mirror\n")
    deb_file = os.path.join(DIR, "tinypkg_1.0_all.deb")
    run("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", pkg, deb_file)
    with open(deb_file, "rb") as f:
        deb = f.read()
    for host, root, suite in APT_REPOS:
        filename = "pool/main/t/tinypkg/tinypkg_1.0_all.deb"
        put(host, "/%s/%s" % (root, filename), deb)
        packages = ("Package: tinypkg\nVersion: 1.0\nArchitecture: all\n"
                    "Maintainer: mirror <m@example.com>\nFilename: %s\nSize: %d\nSHA256: %s\n"
                    "Description: a package from the mirror\n\n"
                    % (filename, len(deb), hashlib.sha256(deb).hexdigest()))
        index = "main/binary-amd64/Packages"
        put(host, "/%s/dists/%s/%s" % (root, suite, index), packages)
        release = ("Suite: %s\nCodename: %s\nArchitectures: amd64\nComponents: main\n"
                   "Date: Mon, 01 Jan 2024 00:00:00 UTC\nSHA256:\n %s %d %s\n"
                   % (suite, suite, hashlib.sha256(packages.encode()).hexdigest(),
                      len(packages), index))
        put(host, "/%s/dists/%s/Release" % (root, suite), release)


REGISTRY = "registry-1.docker.io"
CDN = "production.cloudflare.docker.com"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
IMAGE = {}


def docker():
    layer = tar_gz({"tiny.txt": "tiny-from-the-mirror\n"})
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": []}}).encode()
    blobs = {}
    for data in (config, layer):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        hexd = digest.split(":")[1]
        put(CDN, "/registry-v2/docker/registry/v2/blobs/sha256/%s/%s/data" % (hexd[:2], hexd),
            data)
        blobs[digest] = len(data)
    digests = list(blobs)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digests[0], "size": blobs[digests[0]]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digests[1], "size": blobs[digests[1]]}],
    }).encode()
    IMAGE["manifest"] = manifest
    IMAGE["blobs"] = blobs


def registry(path, headers):
    """Docker Hub's registry API: (status, extra headers, body, content type)."""
    if headers.get("Authorization") != "Bearer mirror-token":
        scope = ""
        if path.startswith("/v2/library/tiny/"):
            scope = ',scope="repository:library/tiny:pull"'
        challenge = ('Bearer realm="https://auth.docker.io/token",'
                     'service="registry.docker.io"' + scope)
        return 401, {"WWW-Authenticate": challenge}, b'{"errors":[]}', "application/json"
    if path == "/v2/":
        return 200, {}, b"{}", "application/json"
    if path in ("/v2/library/tiny/manifests/latest",):
        m = IMAGE["manifest"]
        digest = "sha256:" + hashlib.sha256(m).hexdigest()
        return 200, {"Docker-Content-Digest": digest}, m, MANIFEST_TYPE
    prefix = "/v2/library/tiny/blobs/"
    if path.startswith(prefix) and path[len(prefix):] in IMAGE["blobs"]:
        hexd = path[len(prefix):].split(":")[1]
        where = "https://%s/registry-v2/docker/registry/v2/blobs/sha256/%s/%s/data" % (
            CDN, hexd[:2], hexd)
        return 307, {"Location": where}, b"", "text/plain"
    return 404, {}, b'{"errors":[{"code":"NOT_FOUND"}]}', "application/json"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def answer(self, send_body):
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        path = self.path.split("?")[0].split("#")[0]
        full = os.path.normpath(os.path.join(WWW, host, path.lstrip("/")))
        if os.path.isdir(full):
            full = os.path.join(full, "_index")
        inside = full.startswith(os.path.join(WWW, host) + os.sep)
        extra = {}
        if host == REGISTRY and host in NAMES:
            status, extra, body, kind = registry(path, self.headers)
        elif host == "auth.docker.io" and host in NAMES and path == "/token":
            status, body, kind = 200, b'{"token":"mirror-token"}', "application/json"
        elif host in NAMES and inside and os.path.isfile(full):
            with open(full, "rb") as f:
                body = f.read()
            status = 200
            kind = ("application/json" if body[:1] in (b"{", b"[")
                    else "text/html" if body[:1] == b"<" else "application/octet-stream")
        else:
            status, body, kind = 404, b"not in the mirror\n", "text/plain"
        with LOCK, open(os.path.join(DIR, "requests.jsonl"), "a") as f:
            f.write(json.dumps({"host": host, "method": self.command, "path": self.path,
                                "status": status}) + "\n")
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)


def main():
    leaf, key = make_certs()
    npm()
    pypi()
    crates()
    github()
    go()
    apt()
    docker()
    plain = http.server.ThreadingHTTPServer((ADDR, 80), Handler)
    plain.daemon_threads = True
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(leaf, key)
    server = http.server.ThreadingHTTPServer((ADDR, 443), Handler)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
