//! Property: for random frames and the built-in filters, the evaluator's
//! verdict (gw-ir) is what the kernel does with the generated nftables.
//!
//! Each case binds guest 1 to a built-in filter, sends a batch of random
//! frames from the guest to the (unfiltered) peer and from the peer to the
//! guest, and compares which ones arrived with the evaluator's verdicts. The
//! frames come from a seeded generator; set GW_ORACLE_SEED to try others.

use gw_builtins::Library;
use gw_ir::eval::{Arp, Ip};
use gw_ir::{eval, Packet, Side, Verdict};
use gw_model::value::state;
use gw_model::MacAddr;
use gw_testns::TestHost;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const GW: &str = env!("CARGO_BIN_EXE_guestwall");

/// A small deterministic generator (xorshift64*), enough for test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn mac(s: &str) -> MacAddr {
    MacAddr::parse(s).expect("mac")
}

struct Frame {
    scapy: String,
    packet: Packet,
    tag: String,
}

/// A random frame from `src` (MAC, IPv4) to `dst`.
fn frame(rng: &mut Rng, n: usize, own: (&str, &str), other: (&str, &str), dst: (&str, &str)) -> Frame {
    let tag = format!("gwt{n:04}");
    let src_mac = *rng.pick(&[own.0, own.0, own.0, other.0]);
    let dst_mac = *rng.pick(&[dst.0, dst.0, "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:fb"]);
    let base = |et: u16| Packet {
        ether_src: mac(src_mac),
        ether_dst: mac(dst_mac),
        ether_type: et,
        vlan: None,
        arp: None,
        ip: None,
        raw: Vec::new(),
        ct: 0,
    };
    let ether = format!("Ether(src='{src_mac}', dst='{dst_mac}'");
    match rng.next() % 7 {
        0..=2 => {
            let src_ip = *rng.pick(&[own.1, own.1, other.1, "0.0.0.0"]);
            let dst_ip = *rng.pick(&[dst.1, dst.1, "255.255.255.255", "233.252.0.1"]);
            let dport = *rng.pick(&[53u16, 67, 68, 9, 80]);
            let sport = if dport == 67 { 68 } else { 10000 + n as u16 };
            let mut p = base(0x0800);
            p.ip = Some(Ip {
                src: IpAddr::V4(src_ip.parse().expect("ip")),
                dst: IpAddr::V4(dst_ip.parse().expect("ip")),
                proto: 17,
                dscp: 0,
                sport: Some(sport),
                dport: Some(dport),
                icmp: None,
                tcp_flags: None,
            });
            p.ct = state::NEW;
            let scapy =
                format!("{ether})/IP(src='{src_ip}', dst='{dst_ip}')/UDP(sport={sport}, dport={dport})/Raw(b'{tag}')");
            Frame { scapy, packet: p, tag }
        }
        3 => {
            let op = *rng.pick(&[1u16, 2]);
            let sha = *rng.pick(&[own.0, own.0, other.0]);
            let spa = *rng.pick(&[own.1, own.1, other.1]);
            let tha = if op == 1 { "00:00:00:00:00:00" } else { dst.0 };
            let mut p = base(0x0806);
            p.arp = Some(Arp {
                htype: 1,
                ptype: 0x0800,
                op,
                sha: mac(sha),
                spa: spa.parse::<Ipv4Addr>().expect("ip"),
                tha: mac(tha),
                tpa: dst.1.parse().expect("ip"),
            });
            let scapy = format!(
                "{ether})/ARP(op={op}, hwsrc='{sha}', psrc='{spa}', hwdst='{tha}', pdst='{}')/Raw(b'{tag}')",
                dst.1
            );
            Frame { scapy, packet: p, tag }
        }
        4 => {
            let mut p = base(0x86dd);
            p.ip = Some(Ip {
                src: IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().expect("ip")),
                dst: IpAddr::V6("2001:db8::9".parse::<Ipv6Addr>().expect("ip")),
                proto: 17,
                dscp: 0,
                sport: Some(10000 + n as u16),
                dport: Some(9),
                icmp: None,
                tcp_flags: None,
            });
            p.ct = state::NEW;
            let scapy = format!(
                "{ether})/IPv6(src='2001:db8::1', dst='2001:db8::9')/UDP(sport={}, dport=9)/Raw(b'{tag}')",
                10000 + n
            );
            Frame { scapy, packet: p, tag }
        }
        5 => {
            let mut p = base(0x8100);
            p.vlan = Some((5, 0x0800));
            let scapy =
                format!("{ether})/Dot1Q(vlan=5)/IP(src='{}', dst='{}')/UDP(dport=9)/Raw(b'{tag}')", own.1, dst.1);
            Frame { scapy, packet: p, tag }
        }
        _ => {
            let et = *rng.pick(&[0x88b5u16, 0x8035]);
            let p = base(et);
            let scapy = format!("{ether}, type={et:#06x})/Raw(b'{tag}')");
            Frame { scapy, packet: p, tag }
        }
    }
}

#[test]
fn evaluator_agrees_with_the_kernel_on_builtin_filters() {
    let seed: u64 = std::env::var("GW_ORACLE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_2026);
    let lib = Library::builtins().expect("built-ins");
    let t = TestHost::new(1);
    let (g1, peer) = (t.guest(1).clone(), t.peer.clone());
    let other = ("52:54:00:00:00:77", "192.0.2.77");
    let filters: &[(&str, &[(&str, &str)])] = &[
        ("clean-traffic", &[("IP", "192.0.2.1")]),
        ("clean-traffic-gateway", &[("IP", "192.0.2.1"), ("GATEWAY_MAC", "52:54:00:00:00:09")]),
        ("no-mac-spoofing", &[]),
        ("no-ip-spoofing", &[("IP", "192.0.2.1")]),
        ("no-arp-spoofing", &[("IP", "192.0.2.1")]),
        ("no-other-l2-traffic", &[]),
        ("allow-dhcp", &[("DHCPSERVER", "192.0.2.9")]),
        ("no-ip-multicast", &[]),
        ("no-mac-broadcast", &[]),
        ("qemu-announce-self", &[]),
        ("allow-arp", &[]),
    ];
    let mut rng = Rng(seed | 1);
    let mut n = 0usize;
    let mut mismatches = Vec::new();
    let mut checked = 0;
    let (mut passed, mut dropped) = (0, 0);
    for (filter, params) in filters {
        let path = t.binding(1, filter, params);
        let o = t.guestwall(GW, &["apply", path.to_str().expect("path")]);
        assert!(o.status.success(), "apply {filter}: {}", String::from_utf8_lossy(&o.stderr));
        let binding = gw_xml::read_binding(&std::fs::read_to_string(&path).expect("read")).expect("binding").value;
        let bound = gw_ir::bind(&lib, &binding).expect("bind");
        for side in Side::BOTH {
            let frames: Vec<Frame> = (0..30)
                .map(|_| {
                    n += 1;
                    match side {
                        Side::FromGuest => frame(&mut rng, n, (&g1.mac, &g1.ip), other, (&peer.mac, &peer.ip)),
                        Side::ToGuest => frame(&mut rng, n, (&peer.mac, &peer.ip), other, (&g1.mac, &g1.ip)),
                    }
                })
                .collect();
            let (from, to) = match side {
                Side::FromGuest => (&g1.ns, &peer.ns),
                Side::ToGuest => (&peer.ns, &g1.ns),
            };
            let arrived = t.tags_arriving(from, &frames.iter().map(|f| f.scapy.clone()).collect::<Vec<_>>(), to);
            for f in &frames {
                let d = eval(bound.concrete.side(side), &f.packet);
                let expected = d.verdict == Verdict::Accept;
                let got = arrived.contains(&f.tag);
                checked += 1;
                if got {
                    passed += 1;
                } else {
                    dropped += 1;
                }
                if expected != got {
                    mismatches.push(format!(
                        "{filter} {side:?}: {}\n  evaluator: {:?} by {:?}; kernel: {}",
                        f.scapy,
                        d.verdict,
                        d.rule,
                        if got { "arrived" } else { "dropped" }
                    ));
                }
            }
        }
    }
    assert_eq!(checked, filters.len() * 60);
    assert!(
        mismatches.is_empty(),
        "seed {seed}: {} of {checked} frames disagree:\n{}\n{}",
        mismatches.len(),
        mismatches.join("\n"),
        t.ruleset()
    );
    // Both outcomes must be exercised, or the comparison proves little.
    assert!(passed > checked / 10 && dropped > checked / 10, "too one-sided: {passed} passed, {dropped} dropped");
    println!("evaluator and kernel agree on {checked} frames ({passed} passed, {dropped} dropped; seed {seed})");
}
