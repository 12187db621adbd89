#!/usr/bin/env python3
"""Floods the appliance with new INVITEs from one source (loopback only), paced to RATE/s.

usage: flood_invites.py SRC_IP TARGET_IP:PORT RATE SECONDS
Every INVITE has its own Call-ID and branch; responses are read and counted (503s with
Retry-After, other statuses) and nothing is acknowledged, as a flooder would.
"""
import socket
import sys
import time

src, target, rate, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
host, port = target.rsplit(":", 1)
if not (src.startswith("127.") and host.startswith("127.")):
    sys.exit("loopback only")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((src, 0))
s.setblocking(False)
lport = s.getsockname()[1]
tmpl = (
    "INVITE sip:+14255550100@mediation.lab.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {src}:{lport};branch=z9hG4bK-fl{n};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:flood@{src}>;tag=fl{n}\r\n"
    "To: <sip:+14255550100@mediation.lab.example>\r\nCall-ID: flood-{n}@{src}\r\n"
    "CSeq: 1 INVITE\r\nContact: <sip:flood@{src}:{lport}>\r\nContent-Length: 0\r\n\r\n"
)
sent = 0
statuses = {}
retry_after = 0
start = time.monotonic()
end = start + seconds
batch = max(1, rate // 1000)
while True:
    now = time.monotonic()
    if now >= end:
        break
    due = int((now - start) * rate)
    while sent < due:
        for _ in range(batch):
            try:
                s.sendto(tmpl.format(src=src, lport=lport, n=sent).encode(), (host, int(port)))
            except BlockingIOError:
                pass
            sent += 1
    try:
        while True:
            data = s.recv(65535)
            code = data[8:11].decode(errors="replace")
            statuses[code] = statuses.get(code, 0) + 1
            if code == "503" and b"\r\nRetry-After:" in data:
                retry_after += 1
    except BlockingIOError:
        pass
    time.sleep(0.0005)
# Late answers.
time.sleep(1.0)
try:
    while True:
        data = s.recv(65535)
        code = data[8:11].decode(errors="replace")
        statuses[code] = statuses.get(code, 0) + 1
        if code == "503" and b"\r\nRetry-After:" in data:
            retry_after += 1
except BlockingIOError:
    pass
elapsed = time.monotonic() - start
print(f"flood: sent {sent} INVITEs in {elapsed:.1f} s ({sent/elapsed:.0f}/s); "
      f"answers by status {dict(sorted(statuses.items()))}; 503 with Retry-After: {retry_after}")
