"""Fetches a URL through an HTTP proxy with Python's standard library, verifying TLS strictly
(VERIFY_X509_STRICT, as Python 3.13 does by default). Prints the status, then the body."""
import ssl
import sys
import urllib.error
import urllib.request

proxy, cafile, url = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=cafile)
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({"http": proxy, "https": proxy}),
    urllib.request.HTTPSHandler(context=ctx),
)
try:
    with opener.open(url, timeout=30) as resp:
        print(resp.status)
        print(resp.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)
    print(e.read().decode())
