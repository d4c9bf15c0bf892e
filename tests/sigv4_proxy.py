#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""sigv4_proxy.py UPSTREAM_PORT ACCESS_KEY:SECRET ... - a reverse proxy on
127.0.0.1 that checks each request's AWS Signature Version 4 (the
Authorization header, as S3 defines it) before it forwards the request to
the S3 API server on UPSTREAM_PORT, because s3rver itself checks only the
access key id.  A request whose signature does not match, whose credential
names an unknown key, or whose x-amz-content-sha256 is not the body's hash
gets S3's 403 with <Code>SignatureDoesNotMatch</Code> (or
InvalidAccessKeyId) and never reaches the server.  Prints the port it
listens on, then serves until killed; on stderr, a line "region R" per
signed request.  Standard library only (hmac,
hashlib); test-side only."""
import hashlib
import hmac
import http.client
import http.server
import sys
import urllib.parse

UPSTREAM = int(sys.argv[1])
SECRETS = dict(a.split(":", 1) for a in sys.argv[2:])


def sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def canonical_query(q):
    pairs = urllib.parse.parse_qsl(q, keep_blank_values=True)
    enc = lambda s: urllib.parse.quote(s, safe="-_.~")
    return "&".join("%s=%s" % (enc(k), enc(v)) for k, v in sorted(pairs))


def check(method, target, headers, body):
    """None when the request is signed right, else (code, message)."""
    auth = headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return ("AccessDenied", "no AWS4-HMAC-SHA256 Authorization header")
    fields = dict(p.strip().split("=", 1) for p in auth[17:].split(","))
    cred = fields.get("Credential", "").split("/")
    if len(cred) != 5 or cred[4] != "aws4_request":
        return ("AuthorizationHeaderMalformed", "bad Credential")
    akid, date, region, service = cred[:4]
    # The test reads which region signed each request here.
    print("region", region, file=sys.stderr, flush=True)
    if akid not in SECRETS:
        return ("InvalidAccessKeyId", "unknown access key id")
    payload = headers.get("x-amz-content-sha256", "")
    if payload != "UNSIGNED-PAYLOAD" and payload != hashlib.sha256(body).hexdigest():
        return ("XAmzContentSHA256Mismatch", "x-amz-content-sha256 is not the body's")
    signed = fields.get("SignedHeaders", "").split(";")
    if "host" not in signed:
        return ("AccessDenied", "host is not signed")
    path, _, query = target.partition("?")
    canon_headers = "".join(
        "%s:%s\n" % (h, " ".join(headers.get(h, "").split())) for h in signed)
    creq = "\n".join([method, path, canonical_query(query), canon_headers,
                      ";".join(signed), payload])
    scope = "/".join([date, region, service, "aws4_request"])
    sts = "\n".join(["AWS4-HMAC-SHA256", headers.get("x-amz-date", ""), scope,
                     hashlib.sha256(creq.encode()).hexdigest()])
    key = sign(sign(sign(sign(("AWS4" + SECRETS[akid]).encode(), date), region),
                    service), "aws4_request")
    want = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, fields.get("Signature", "")):
        return ("SignatureDoesNotMatch", "The request signature we calculated does not "
                "match the signature you provided.")
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def relay(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        bad = check(self.command, self.path, headers, body)
        if bad:
            xml = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code>"
                   "<Message>%s</Message></Error>" % bad).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(xml)
            return
        up = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=30)
        up.request(self.command, self.path, body=body or None,
                   headers={k: v for k, v in self.headers.items()})
        r = up.getresponse()
        data = r.read()
        self.send_response(r.status, r.reason)
        for k, v in r.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        # A HEAD answer's length is the object's, not of its empty body.
        self.send_header("Content-Length", r.getheader("Content-Length", "0")
                         if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        up.close()

    do_GET = do_HEAD = do_PUT = relay


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
