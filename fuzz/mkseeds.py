#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# fuzz/mkseeds.py CLI: writes the seed corpora of the fc, packed and ws
# harnesses (fuzz/corpus-fc, -packed, -ws) from scratch, the packed images
# with the CLI's `postcopy pack`.  Deterministic; no test runs it.  What a
# fuzzer found is added beside these by hand (see fuzz/README.md).
import os, random, struct, subprocess, sys, tempfile

here = os.path.dirname(os.path.abspath(__file__))
cli = sys.argv[1]

def put(corpus, name, data):
    d = os.path.join(here, corpus)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)

# ---- fc: 8-byte LE file size, 1 byte read size (0: one read), the JSON ----
MiB = 1 << 20
def region(base, size, off, shape, ps=4096):
    s = '{"base_host_virt_addr":%d,"size":%d,"offset":%d' % (base, size, off)
    if shape == 'v1.7':
        s += ',"page_size_kib":%d' % ps
    elif shape == 'v1.12':
        s += ',"page_size":%d,"page_size_kib":%d' % (ps, ps)
    return s + '}'

def fc(name, file_size, json, piece=0):
    put('corpus-fc', name, struct.pack('<QB', file_size, piece) + json.encode())

base = 139637976727552
for shape in ('v1.1', 'v1.7', 'v1.12'):
    fc('ok-one-' + shape, 128 * MiB, '[' + region(base, 128 * MiB, 0, shape) + ']')
    regs = [region(base, 2 * MiB, 0, shape), region(base + 4 * MiB, 6 * MiB, 2 * MiB, shape),
            region(base - 64 * MiB, 4096, 8 * MiB, shape)]
    fc('ok-holes-' + shape, 8 * MiB + 4096, '[' + ','.join(regs) + ']', piece=7)
fc('ok-huge', 4 * MiB, '[' + region(base, 4 * MiB, 0, 'v1.12', 2 * MiB) + ']')
fc('ok-spaces', 4096, ' [ ' + region(4096, 4096, 0, 'v1.1') + ' ]\r\n\t', piece=1)
fc('ok-64', 64 * 4096, '[' + ','.join(region(8192 * i, 4096, 4096 * i, 'v1.12') for i in range(64)) + ']', piece=200)
fc('bad-65', 65 * 4096, '[' + ','.join(region(8192 * i, 4096, 4096 * i, 'v1.1') for i in range(65)) + ']')
fc('bad-overlap', 8192, '[' + region(4096, 4096, 0, 'v1.1') + ',' + region(4096, 4096, 4096, 'v1.1') + ']')
fc('bad-offset', 8192, '[' + region(4096, 4096, 4096, 'v1.1') + ',' + region(0, 4096, 0, 'v1.1') + ']')
fc('bad-past-file', 4096, '[' + region(0, 8192, 0, 'v1.1') + ']')
fc('bad-short', 8192, '[' + region(0, 4096, 0, 'v1.1') + ']')
fc('bad-page-size', 4096, '[' + region(0, 4096, 0, 'v1.12', 65536) + ']')
fc('bad-mixed', 8192, '[' + region(0, 4096, 0, 'v1.1') + ',' + region(4096, 4096, 4096, 'v1.7') + ']')
fc('bad-disagree', 4096, '[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":4096,"page_size_kib":4}]')
fc('bad-wrap', 8192, '[{"base_host_virt_addr":18446744073709547520,"size":8192,"offset":0}]')
fc('bad-negative', 4096, '[{"base_host_virt_addr":-4096,"size":4096,"offset":0}]')
fc('bad-string', 4096, '[{"base_host_virt_addr":"0","size":4096,"offset":0}]')
fc('bad-memfd', 4096, '[{"base_host_virt_addr":0,"size":4096,"offset":0,"is_guest_memfd":true}]')
fc('bad-not-array', 4096, '{"base_host_virt_addr":0,"size":4096,"offset":0}')
fc('bad-empty', 4096, '[]')
fc('bad-json', 4096, '[{"base_host_virt_addr":0,', piece=3)
fc('bad-trailing', 4096, '[' + region(0, 4096, 0, 'v1.1') + ']x')
fc('bad-big-int', 4096, '[{"base_host_virt_addr":0,"size":99999999999999999999999,"offset":0}]')

# ---- packed: 1 byte (bit 0: fix digests, bit 1: fix identity), the file ----
with tempfile.TemporaryDirectory() as t:
    rnd = random.Random(1)
    def packed(name, raw, chunk, flags=3):
        src, out = os.path.join(t, 'img'), os.path.join(t, 'out')
        with open(src, 'wb') as f:
            f.write(raw)
        subprocess.run([cli, 'pack', '--chunk', str(chunk), src, out], check=True,
                       stdout=subprocess.DEVNULL)
        put('corpus-packed', name, bytes([flags]) + open(out, 'rb').read())
    K = 1024
    text = b''.join(b'page %6d of a compressible image\n' % i for i in range(64 * K // 36 + 1))[:64 * K]
    noise = bytes(rnd.getrandbits(8) for _ in range(64 * K))
    # zstd, zero, raw and a short last chunk (image not a chunk multiple)
    packed('mixed', text + bytes(64 * K) + noise + text[:8 * K], 64 * K)
    packed('zero', bytes(128 * K), 64 * K)
    packed('one-page', text[:4096], 64 * K)
    packed('mixed-no-fix', text + bytes(64 * K) + text[:4 * K], 64 * K, flags=0)
    packed('digest-only', text + text[:4 * K], 64 * K, flags=1)
    big = bytes(3 * MiB) + text[:4 * K]
    packed('zero-big-chunk', big, 1 * MiB)

# ---- ws: 1 byte (bit 0: fix the checksum), the file ----------------------
def ws(name, image_size, entries, runs=1, flags=1, count=None):
    n = len(entries) if count is None else count
    end_ns = entries[-1][1] * 1000 if entries else 0
    b = b'PCWSET\r\n' + struct.pack('<IIQ', 1, 64, image_size) + bytes(range(16))
    b += struct.pack('<QIIQ', n, runs, 16, end_ns)
    for page, t_us, thread, r in entries:
        b += struct.pack('<QIHH', page, t_us, thread, r)
    b += bytes(8)
    put('corpus-ws', name, bytes([flags]) + b)

ws('ok-empty', 4096, [])
ws('ok-one', 4096, [(0, 0, 0, 1)])
ws('ok-some', 64 * 4096, [(5, 1, 0, 1), (0, 1, 1, 1), (63, 7, 0xffff, 1), (9, 100, 2, 1)])
ws('ok-runs', 16 * 4096, [(p, p * 3, p % 4, 1 + p % 3) for p in range(15, -1, -1)], runs=3)
ws('bad-page', 4096, [(1, 0, 0, 1)])
ws('bad-twice', 8192, [(1, 0, 0, 1), (1, 2, 0, 1)])
ws('bad-order', 8192, [(0, 5, 0, 1), (1, 2, 0, 1)])
ws('bad-runs', 8192, [(0, 5, 0, 2)])
ws('bad-count', 8192, [(0, 5, 0, 1)], count=2)
ws('bad-checksum', 8192, [(0, 5, 0, 1)], flags=0)
ws('bad-size', 4097, [(0, 5, 0, 1)])
put('corpus-ws', 'bad-magic', b'\x01' + b'PCWSET\n\n' + bytes(64))
put('corpus-ws', 'bad-short', b'\x01' + b'PCWSET\r\n' + bytes(30))

# ---- http: 1 byte (the reason buffer's size - 1), a header line or body ---
def http(name, text, out_len=255):
    put('corpus-http', name, bytes([out_len]) + text)

http('status-206', b'HTTP/1.1 206 Partial Content\r\n')
http('status-200', b'HTTP/2 200 \r\n')
http('status-100', b'HTTP/1.1 100 Continue\r\n', 3)
http('status-none', b'HTTP/1.1\r\n')
http('range', b'Content-Range: bytes 0-4095/1048576\r\n')
http('range-case', b'content-range:\tBYTES 4096-8191/8192  \r\n')
http('range-star', b'Content-Range: bytes */1048576\r\n')
http('range-backwards', b'Content-Range: bytes 10-5/100\r\n')
http('range-zeros', b'Content-Range: bytes 000-0001/00002\r\n')
http('range-max', b'Content-Range: bytes 0-18446744073709551614/18446744073709551615\r\n')
http('etag', b'ETag: "5d41402abc4b2a76b9719d911017c592"\r\n')
http('etag-weak', b'etag: W/"abc"\r\n')
http('last-modified', b'Last-Modified: Tue, 01 Dec 2026 20:00:00 GMT\r\n')
http('long-value', b'ETag: "' + b'a' * 600 + b'"\r\n')
http('s3-error', b'<?xml version="1.0"?><Error><Code>NoSuchKey</Code><Message>The key does not exist</Message></Error>', 40)
http('s3-code-only', b'<Error><Code>AccessDenied</Code>', 0)
http('s3-open', b'<Error><Message>no end', 1)
http('html-error', b'<html><body><h1>404 Not Found</h1>\n\n<p>nginx</p></body></html>', 20)

# ---- s3: 1 byte (bit 0: a URL), then "PROFILE\nFILE" or "BUCKET/KEY\nENDPOINT\nREGION"
def s3(name, mode, text):
    put('corpus-s3', name, bytes([mode]) + text)

s3('creds-default', 0, b'default\n[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = secret/KEY+1\n')
s3('creds-profile', 0, b'dev\n# comment\n; other\n[default]\naws_access_key_id=A\naws_secret_access_key=B\n\n'
   b'[ dev ]\r\n\taws_access_key_id\t=\tDEV\r\naws_secret_access_key = DEVSECRET \r\naws_session_token = TOKEN==\r\n')
s3('creds-missing', 0, b'prod\n[default]\naws_access_key_id = A\naws_secret_access_key = B\n')
s3('creds-half', 0, b'default\n[default]\naws_access_key_id = A\n')
s3('creds-empty-value', 0, b'default\n[default]\naws_access_key_id =\naws_secret_access_key = B\n')
s3('creds-no-bracket', 0, b'default\n[default\naws_access_key_id = A\naws_secret_access_key = B\n')
s3('url-aws', 1, b'pcbucket/images/vm-1.img\n\nus-east-1')
s3('url-aws-region', 1, b'my.bucket-1/a b/c+d?e#f%\n\neu-west-3')
s3('url-endpoint', 1, b'pcbucket/key\nhttp://127.0.0.1:9000/\nus-east-1')
s3('url-endpoint-https', 1, b'pcbucket/dir/key.img\nhttps://minio.example:9000\n')
s3('url-unicode-key', 1, b'pcbucket/\xc3\xa9t\xc3\xa9\n\n')
s3('url-dot-segments', 1, b'pcbucket/a/../other/key\nhttp://127.0.0.1:9000\n')
s3('url-dot-key', 1, b'pcbucket/.\n\n')
s3('config-region', 0, b'pc\n[default]\nregion = us-west-2\n[profile pc]\nregion=eu-west-3\n')
