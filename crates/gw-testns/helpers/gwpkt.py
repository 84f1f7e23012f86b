#!/usr/bin/env python3
"""Packet helper for guestwall's namespace tests: real sockets and crafted frames.

tcp-serve PORT                         accept connections, answer "ok", forever
tcp-connect IP PORT [SPORT] [TIMEOUT]  exit 0 when the server answered
udp-serve PORT                         echo datagrams, forever
udp-query IP PORT [TIMEOUT]            exit 0 when an answer came back
send IFACE EXPR                        send a scapy frame, e.g. "Ether()/IP()/UDP()"
ftp-server                             active-mode FTP: on PORT, connect from port 20
ftp-client SERVER MY_IP [TIMEOUT]      exit 0 when the data connection arrived
send-many IFACE FILE                   send the scapy frames of FILE, one per line
sniff-tags IFACE GRACE                 print "ready", then, GRACE seconds after stdin
                                       closes, the gwtNNNN tags seen
sniff IFACE GRACE EXPR                 print "ready", then, GRACE seconds after stdin
                                       closes, the number of frames p with EXPR true
"""
import socket, sys, time

def tcp_serve(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port))); s.listen(16)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b"ok")
        finally:
            c.close()

def tcp_connect(ip, port, sport="0", timeout="2"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(float(timeout))
    if int(sport):
        s.bind(("0.0.0.0", int(sport)))
    try:
        s.connect((ip, int(port)))
        return 0 if s.recv(2) == b"ok" else 1
    except OSError:
        return 1

def udp_serve(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(port)))
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(data, addr)

def udp_query(ip, port, timeout="2"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(float(timeout))
    s.sendto(b"gw", (ip, int(port)))
    try:
        data, _ = s.recvfrom(2048)
        return 0 if data == b"gw" else 1
    except OSError:
        return 1

def ftp_server():
    """A minimal active-mode FTP server: on PORT, connect back from port 20."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 21)); s.listen(4)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        try:
            c.settimeout(3)
            c.sendall(b"220 guestwall test\r\n")
            c.recv(256)  # USER
            c.sendall(b"331 any password\r\n")
            line = c.recv(256).decode(errors="replace").strip()
            if not line.upper().startswith("PORT "):
                continue
            h = [int(x) for x in line[5:].split(",")]
            ip, port = ".".join(map(str, h[:4])), h[4] * 256 + h[5]
            c.sendall(b"200 PORT command successful\r\n")
            d = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            d.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            d.settimeout(2)
            d.bind(("0.0.0.0", 20))
            try:
                d.connect((ip, port)); d.sendall(b"data")
            except OSError:
                pass
            finally:
                d.close()
        except OSError:
            pass
        finally:
            c.close()

def ftp_client(server, my_ip, timeout="3"):
    """Exit 0 when the server's active-mode data connection delivered data."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind((my_ip, 0)); lst.listen(1); lst.settimeout(float(timeout))
    port = lst.getsockname()[1]
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(float(timeout))
    try:
        c.connect((server, 21))
        c.recv(256)
        # The kernel's FTP helper only reads a command that follows a line it
        # has already seen, so PORT must not be the first line (as in real
        # sessions, where USER comes first).
        c.sendall(b"USER anonymous\r\n")
        c.recv(256)
        c.sendall(("PORT %s,%d,%d\r\n" % (my_ip.replace(".", ","), port // 256, port % 256)).encode())
        c.recv(256)
        d, _ = lst.accept()
        d.settimeout(float(timeout))
        return 0 if d.recv(4) == b"data" else 1
    except OSError:
        return 1

def send(iface, expr):
    from scapy.all import sendp, Ether, IP, IPv6, UDP, TCP, ICMP, ARP, Dot1Q, Raw, ICMPv6EchoRequest, ICMPv6ND_NS  # noqa: F401
    frame = eval(expr)
    sendp(frame, iface=iface, verbose=False)
    return 0

def send_many(iface, path):
    import scapy.all as sa
    env = {k: getattr(sa, k) for k in dir(sa) if not k.startswith("_")}
    frames = [eval(line, env) for line in open(path) if line.strip()]
    for f in frames:
        sa.sendp(f, iface=iface, verbose=False)
        time.sleep(0.005)
    return 0

def flood(iface, seconds, pps, expr):
    """Send frame EXPR out of IFACE at about PPS frames a second for SECONDS,
    also while IFACE is down or not there yet (those sends fail and are not
    counted); print how many were sent."""
    import socket
    import scapy.all as sa
    env = {k: getattr(sa, k) for k in dir(sa) if not k.startswith("_")}
    frame = bytes(eval(expr, env))
    end = time.monotonic() + float(seconds)
    gap = 1.0 / float(pps)
    sent = 0
    s = None
    print("ready", flush=True)
    while time.monotonic() < end:
        try:
            if s is None:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
                s.bind((iface, 0))
            s.send(frame)
            sent += 1
        except OSError:
            if s is not None:
                s.close()
            s = None
        time.sleep(gap)
    print(sent, flush=True)
    return 0

def wait_for_stop(grace):
    """Sniff until the caller closes our stdin (it has sent everything),
    then `grace` seconds more for frames in flight; at most a minute."""
    import select
    select.select([sys.stdin], [], [], 60)
    time.sleep(grace)

def sniff_tags(iface, timeout):
    """Print "ready", then after TIMEOUT the gwtNNNN tags seen in frames."""
    import re
    from scapy.all import AsyncSniffer
    seen = set()
    def note(p):
        for m in re.findall(rb"gwt[0-9]{4}", bytes(p)):
            seen.add(m.decode())
    sn = AsyncSniffer(iface=iface, store=False, prn=note, started_callback=lambda: print("ready", flush=True))
    sn.start()
    wait_for_stop(float(timeout))
    sn.stop()
    print(" ".join(sorted(seen)), flush=True)
    return 0

def sniff(iface, timeout, expr):
    import scapy.all as sa
    from scapy.all import AsyncSniffer
    test = eval("lambda p: " + expr, {k: getattr(sa, k) for k in dir(sa) if not k.startswith("_")})
    seen = []
    sn = AsyncSniffer(iface=iface, store=False, prn=lambda p: seen.append(1) if test(p) else None,
                      started_callback=lambda: print("ready", flush=True))
    sn.start()
    wait_for_stop(float(timeout))
    sn.stop()
    print(len(seen), flush=True)
    return 0

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = {"tcp-serve": tcp_serve, "tcp-connect": tcp_connect, "udp-serve": udp_serve,
          "udp-query": udp_query, "send": send, "sniff": sniff,
          "ftp-server": ftp_server, "ftp-client": ftp_client,
          "send-many": send_many, "sniff-tags": sniff_tags, "flood": flood}[cmd]
    sys.exit(fn(*args) or 0)
