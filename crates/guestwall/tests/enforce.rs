//! Enforcement, judged by the kernel: real test hosts in network namespaces,
//! `guestwall apply` in the host namespace, real and crafted packets.

use gw_testns::TestHost;

const GW: &str = env!("CARGO_BIN_EXE_guestwall");

fn apply(t: &TestHost, args: &[&str]) {
    let mut full = vec!["apply", "--family-info"];
    full.extend_from_slice(args);
    let o = t.guestwall(GW, &full);
    assert!(
        o.status.success(),
        "guestwall apply failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn udp_frame(src_mac: &str, src_ip: &str, dst_mac: &str, dst_ip: &str, tag: &str) -> String {
    format!("Ether(src='{src_mac}', dst='{dst_mac}')/IP(src='{src_ip}', dst='{dst_ip}')/UDP(sport=4000, dport=9)/Raw(b'{tag}')")
}

fn tagged(tag: &str) -> String {
    format!("p.haslayer(Raw) and bytes(p[Raw].load) == b'{tag}'")
}

#[test]
fn clean_traffic_drops_spoofing_and_passes_legitimate_traffic() {
    let t = TestHost::new(2);
    let (g1, g2, peer) = (t.guest(1).clone(), t.guest(2).clone(), t.peer.clone());
    let b1 = t.binding(1, "clean-traffic", &[("IP", &g1.ip)]);
    let b2 = t.binding(2, "clean-traffic", &[("IP", &g2.ip)]);
    apply(&t, &[b1.to_str().expect("path"), b2.to_str().expect("path")]);
    let rs = t.ruleset();

    // legitimate IPv4 and ARP: to the peer, the other guest, the host, and in
    assert!(t.ping(&g1.ns, &peer.ip), "g1 -> peer\n{rs}");
    assert!(t.ping(&g1.ns, &g2.ip), "g1 -> g2\n{rs}");
    assert!(t.ping(&g1.ns, "192.0.2.254"), "g1 -> host\n{rs}");
    assert!(t.ping(&peer.ns, &g1.ip), "peer -> g1 (incoming IPv4 is accepted)\n{rs}");

    // a crafted frame with the right addresses passes: the control for the spoofs below
    let ok = udp_frame(&g1.mac, &g1.ip, &peer.mac, &peer.ip, "legit");
    assert!(t.frame_arrives(&g1.ns, &ok, &peer.ns, &tagged("legit")), "legit frame\n{rs}");
    // spoofed source IP
    let f = udp_frame(&g1.mac, "192.0.2.50", &peer.mac, &peer.ip, "spoofip");
    assert!(!t.frame_arrives(&g1.ns, &f, &peer.ns, &tagged("spoofip")), "spoofed IP passed\n{rs}");
    // spoofed source MAC
    let f = udp_frame("52:54:00:00:00:77", &g1.ip, &peer.mac, &peer.ip, "spoofmac");
    assert!(!t.frame_arrives(&g1.ns, &f, &peer.ns, &tagged("spoofmac")), "spoofed MAC passed\n{rs}");
    // the other guest's identity
    let f = udp_frame(&g2.mac, &g2.ip, &peer.mac, &peer.ip, "stolen");
    assert!(!t.frame_arrives(&g1.ns, &f, &peer.ns, &tagged("stolen")), "g2's identity passed from g1\n{rs}");
    // DHCP from 0.0.0.0 is let out
    let f = format!("Ether(src='{}', dst='ff:ff:ff:ff:ff:ff')/IP(src='0.0.0.0', dst='255.255.255.255')/UDP(sport=68, dport=67)/Raw(b'dhcp')", g1.mac);
    assert!(t.frame_arrives(&g1.ns, &f, &peer.ns, &tagged("dhcp")), "DHCP discover\n{rs}");

    // ARP: own identity passes, a wrong sender MAC or IP does not
    let arp = |hwsrc: &str, psrc: &str| {
        format!(
            "Ether(src='{}', dst='ff:ff:ff:ff:ff:ff')/ARP(op=1, hwsrc='{hwsrc}', psrc='{psrc}', pdst='{}')",
            g1.mac, peer.ip
        )
    };
    let is_arp =
        |psrc: &str, hwsrc: &str| format!("p.haslayer(ARP) and p[ARP].psrc == '{psrc}' and p[ARP].hwsrc == '{hwsrc}'");
    assert!(t.frame_arrives(&g1.ns, &arp(&g1.mac, &g1.ip), &peer.ns, &is_arp(&g1.ip, &g1.mac)), "own ARP\n{rs}");
    assert!(
        !t.frame_arrives(&g1.ns, &arp("52:54:00:00:00:77", &g1.ip), &peer.ns, &is_arp(&g1.ip, "52:54:00:00:00:77")),
        "ARP with a foreign sender MAC passed\n{rs}"
    );
    assert!(
        !t.frame_arrives(&g1.ns, &arp(&g1.mac, "192.0.2.60"), &peer.ns, &is_arp("192.0.2.60", &g1.mac)),
        "ARP with a foreign sender IP passed\n{rs}"
    );

    // RARP: QEMU's own announce passes, one for a foreign MAC does not
    let rarp = |m: &str| {
        format!(
            "Ether(src='{m}', dst='ff:ff:ff:ff:ff:ff', type=0x8035)/ARP(op=3, hwsrc='{m}', hwdst='{m}', psrc='0.0.0.0', pdst='0.0.0.0')"
        )
    };
    let is_rarp = |m: &str| format!("p.type == 0x8035 and p.src == '{m}'");
    assert!(t.frame_arrives(&g1.ns, &rarp(&g1.mac), &peer.ns, &is_rarp(&g1.mac)), "own RARP announce\n{rs}");
    assert!(
        !t.frame_arrives(&g1.ns, &rarp("52:54:00:00:00:77"), &peer.ns, &is_rarp("52:54:00:00:00:77")),
        "foreign RARP\n{rs}"
    );

    // clean-traffic is IPv4-only: IPv6 and VLAN-tagged frames are dropped
    let v6 = format!(
        "Ether(src='{}', dst='{}')/IPv6(src='2001:db8::1', dst='2001:db8::9')/UDP(dport=9)/Raw(b'six')",
        g1.mac, peer.mac
    );
    assert!(!t.frame_arrives(&g1.ns, &v6, &peer.ns, &tagged("six")), "IPv6 passed\n{rs}");
    let vlan = format!(
        "Ether(src='{}', dst='{}')/Dot1Q(vlan=5)/IP(src='{}', dst='{}')/UDP(dport=9)/Raw(b'vlan')",
        g1.mac, peer.mac, g1.ip, peer.ip
    );
    assert!(!t.frame_arrives(&g1.ns, &vlan, &peer.ns, &tagged("vlan")), "VLAN-tagged passed\n{rs}");
    // other ethertypes are dropped too
    let other = format!("Ether(src='{}', dst='{}', type=0x88b5)/Raw(b'other')", g1.mac, peer.mac);
    assert!(!t.frame_arrives(&g1.ns, &other, &peer.ns, &tagged("other")), "ethertype 0x88b5 passed\n{rs}");

    // incoming: a frame to g1 from the peer arrives; IPv6 to g1 does not
    let inc = udp_frame(&peer.mac, &peer.ip, &g1.mac, &g1.ip, "incoming");
    assert!(t.frame_arrives(&peer.ns, &inc, &g1.ns, &tagged("incoming")), "incoming IPv4\n{rs}");
    let v6in = format!(
        "Ether(src='{}', dst='{}')/IPv6(src='2001:db8::9', dst='2001:db8::1')/UDP(dport=9)/Raw(b'six-in')",
        peer.mac, g1.mac
    );
    assert!(!t.frame_arrives(&peer.ns, &v6in, &g1.ns, &tagged("six-in")), "incoming IPv6 passed\n{rs}");
}

/// The first example filter of the nwfilter documentation (seed 002): ssh
/// and http reachable, DNS and ping out, nothing else.
const WEB: &str = "<filter name='test-web'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='in'>
    <tcp dstportstart='22'/>
  </rule>
  <rule action='accept' direction='in'>
    <tcp dstportstart='80'/>
  </rule>
  <rule action='accept' direction='out'>
    <icmp/>
  </rule>
  <rule action='accept' direction='out'>
    <udp dstportstart='53'/>
  </rule>
  <rule action='drop' direction='inout'>
    <all/>
  </rule>
</filter>
";

/// Seed 002's second example, first solution: the ftp data connection
/// through RELATED.
const FTP1: &str = "<filter name='test-ftp1'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='in'>
    <tcp dstportstart='21'/>
  </rule>
  <rule action='accept' direction='out'>
    <tcp srcportstart='20' state='RELATED,ESTABLISHED'/>
  </rule>
  <rule action='accept' direction='in'>
    <tcp dstportstart='20' state='ESTABLISHED'/>
  </rule>
  <rule action='accept' direction='in'>
    <tcp dstportstart='22'/>
  </rule>
  <rule action='accept' direction='in'>
    <tcp dstportstart='80'/>
  </rule>
  <rule action='accept' direction='out'>
    <icmp/>
  </rule>
  <rule action='accept' direction='out'>
    <udp dstportstart='53'/>
  </rule>
  <rule action='drop' direction='inout'>
    <all/>
  </rule>
</filter>
";

/// Seed 002's second example, second solution: state flags throughout.
const FTP2: &str = "<filter name='test-ftp2'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='in'>
    <all state='ESTABLISHED'/>
  </rule>
  <rule action='accept' direction='out'>
    <all state='ESTABLISHED,RELATED'/>
  </rule>
  <rule action='accept' direction='in'>
    <tcp dstportstart='21' dstportend='22' state='NEW'/>
  </rule>
  <rule action='accept' direction='in'>
    <tcp dstportstart='80' state='NEW'/>
  </rule>
  <rule action='accept' direction='out'>
    <icmp state='NEW'/>
  </rule>
  <rule action='accept' direction='out'>
    <udp dstportstart='53' state='NEW'/>
  </rule>
  <rule action='drop' direction='inout'>
    <all/>
  </rule>
</filter>
";

fn web_server_checks(t: &mut TestHost, with_ftp: bool) {
    let (g1, peer) = (t.guest(1).clone(), t.peer.clone());
    for port in ["22", "80", "23"] {
        t.serve(&g1.ns, &["tcp-serve", port]);
    }
    t.serve(&peer.ns, &["udp-serve", "53"]);
    t.serve(&peer.ns, &["udp-serve", "5353"]);
    t.serve(&peer.ns, &["tcp-serve", "8080"]);
    let rs = t.ruleset();
    assert!(t.tcp(&peer.ns, &g1.ip, 22, 0), "ssh to the guest\n{rs}");
    assert!(t.tcp(&peer.ns, &g1.ip, 80, 0), "http to the guest\n{rs}");
    assert!(!t.tcp(&peer.ns, &g1.ip, 23, 0), "telnet to the guest passed\n{rs}");
    assert!(t.udp(&g1.ns, &peer.ip, 53), "DNS from the guest\n{rs}");
    assert!(!t.udp(&g1.ns, &peer.ip, 5353), "UDP 5353 from the guest passed\n{rs}");
    assert!(!t.tcp(&g1.ns, &peer.ip, 8080, 0), "new TCP from the guest passed\n{rs}");
    assert!(t.ping(&g1.ns, &peer.ip), "ping out\n{rs}");
    assert!(!t.ping(&peer.ns, &g1.ip), "ping in passed\n{rs}");
    if with_ftp {
        t.serve(&g1.ns, &["ftp-server"]);
        let h = gw_testns::helper();
        let ftp = t.exec(&peer.ns, &["python3", &h, "ftp-client", &g1.ip, &peer.ip, "3"]);
        assert!(ftp.status.success(), "active ftp data connection (RELATED) failed\n{rs}");
        // A connection from port 20 that no ftp command announced is NEW: dropped.
        assert!(!t.tcp(&g1.ns, &peer.ip, 8080, 20), "unrelated connection from port 20 passed\n{rs}");
    }
}

#[test]
fn seed_web_filter() {
    let mut t = TestHost::new(1);
    t.filter("web.xml", WEB);
    let dir = t.filter_dir();
    let g1ip = t.guest(1).ip.clone();
    let b = t.binding(1, "test-web", &[("IP", &g1ip)]);
    apply(&t, &["--filter-dir", &dir, b.to_str().expect("path")]);
    web_server_checks(&mut t, false);
}

#[test]
fn seed_ftp_filter_first_solution() {
    let mut t = TestHost::new(1);
    t.filter("ftp1.xml", FTP1);
    let dir = t.filter_dir();
    let g1ip = t.guest(1).ip.clone();
    let b = t.binding(1, "test-ftp1", &[("IP", &g1ip)]);
    apply(&t, &["--filter-dir", &dir, b.to_str().expect("path")]);
    web_server_checks(&mut t, true);
}

#[test]
fn seed_ftp_filter_second_solution() {
    let mut t = TestHost::new(1);
    t.filter("ftp2.xml", FTP2);
    let dir = t.filter_dir();
    let g1ip = t.guest(1).ip.clone();
    let b = t.binding(1, "test-ftp2", &[("IP", &g1ip)]);
    apply(&t, &["--filter-dir", &dir, b.to_str().expect("path")]);
    web_server_checks(&mut t, true);
}

/// Traffic between two filtered guests is judged by the sender's "out"
/// rules and the receiver's "in" rules; traffic to the host by the sender's.
#[test]
fn guest_to_guest_and_guest_to_host_are_judged_at_both_ends() {
    let mut t = TestHost::new(2);
    // g1 accepts ssh in and may open anything out; g2 may only open port 80 out.
    t.filter(
        "pair.xml",
        "<filter name='g1-policy'>
  <rule action='accept' direction='in'><tcp dstportstart='22'/></rule>
  <rule action='accept' direction='out'><tcp/></rule>
  <rule action='drop' direction='inout'><all/></rule>
</filter>
",
    );
    t.filter(
        "pair2.xml",
        "<filter name='g2-policy'>
  <rule action='accept' direction='out'><tcp dstportstart='80'/></rule>
  <rule action='accept' direction='in'><tcp dstportstart='80'/></rule>
  <rule action='drop' direction='inout'><all/></rule>
</filter>
",
    );
    let dir = t.filter_dir();
    let b1 = t.binding(1, "g1-policy", &[]);
    let b2 = t.binding(2, "g2-policy", &[]);
    apply(&t, &["--filter-dir", &dir, b1.to_str().expect("p"), b2.to_str().expect("p")]);
    let (g1, g2) = (t.guest(1).clone(), t.guest(2).clone());
    t.serve(&g1.ns, &["tcp-serve", "22"]);
    t.serve(&g1.ns, &["tcp-serve", "80"]);
    t.serve(&g2.ns, &["tcp-serve", "80"]);
    t.serve(&g2.ns, &["tcp-serve", "22"]);
    t.serve(&t.host.clone(), &["tcp-serve", "2222"]);
    let rs = t.ruleset();
    // g1 -> g2:80: g1 may open it, g2 accepts 80 in
    assert!(t.tcp(&g1.ns, &g2.ip, 80, 0), "g1 -> g2:80\n{rs}");
    // g1 -> g2:22: g1 may open it, but g2's in rules refuse
    assert!(!t.tcp(&g1.ns, &g2.ip, 22, 0), "g2 accepted port 22\n{rs}");
    // g2 -> g1:22: g1 accepts 22 in, but g2 may only open port 80
    assert!(!t.tcp(&g2.ns, &g1.ip, 22, 0), "g2 opened port 22\n{rs}");
    // g2 -> g1:80: g2 may open 80, but g1 accepts only 22 in
    assert!(!t.tcp(&g2.ns, &g1.ip, 80, 0), "g1 accepted port 80\n{rs}");
    // to the host itself: g1 may, g2 may not (not port 80)
    assert!(t.tcp(&g1.ns, "192.0.2.254", 2222, 0), "g1 -> host\n{rs}");
    assert!(!t.tcp(&g2.ns, "192.0.2.254", 2222, 0), "g2 -> host passed\n{rs}");
}

/// Every built-in filter compiles to a ruleset this kernel accepts.
#[test]
fn every_builtin_ruleset_loads() {
    let t = TestHost::new(2);
    for (name, _) in gw_builtins::BUILTINS {
        let v6 = name.contains("dhcpv6");
        let params: Vec<(&str, &str)> = vec![
            ("IP", "192.0.2.1"),
            ("IPV6", "2001:db8::1"),
            ("DHCPSERVER", if v6 { "2001:db8::fe" } else { "192.0.2.254" }),
            ("GATEWAY_MAC", "52:54:00:00:00:09"),
        ];
        let b1 = t.binding(1, name, &params);
        let b2 = t.binding(2, name, &params);
        let o = t.guestwall(GW, &["apply", b1.to_str().expect("p"), b2.to_str().expect("p")]);
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(t.ruleset().contains("table bridge guestwall"), "{name}: nothing loaded");
    }
}

/// Bad bindings are refused with a clear message, and the rules already in
/// place stay exactly as they were.
#[test]
fn bad_bindings_change_nothing() {
    let t = TestHost::new(1);
    let g1 = t.guest(1).clone();
    let good = t.binding(1, "clean-traffic", &[("IP", &g1.ip)]);
    apply(&t, &[good.to_str().expect("p")]);
    let before = t.ruleset_stateless();
    let cases: Vec<(String, &str)> = vec![
        (t.binding(1, "no-such-filter", &[]).display().to_string(), "unknown filter 'no-such-filter'"),
        (t.binding(1, "clean-traffic", &[("IP", "192.0.2.300")]).display().to_string(), "not an IPv4 address"),
        (
            t.filter_file(
                "badport.xml",
                "<filterbinding><owner><name>x</name><uuid>00000000-0000-4000-8000-000000000009</uuid></owner><portdev name='a/b'/><mac address='52:54:00:00:00:01'/><filterref filter='clean-traffic'/></filterbinding>",
            ),
            "portdev/name: 'a/b' is not an interface name",
        ),
        (
            t.filter_file(
                "badmac.xml",
                "<filterbinding><owner><name>x</name><uuid>00000000-0000-4000-8000-000000000009</uuid></owner><portdev name='v1'/><mac address='52:54:00:00:00'/><filterref filter='clean-traffic'/></filterbinding>",
            ),
            "not a MAC address",
        ),
    ];
    for (path, want) in &cases {
        let o = t.guestwall(GW, &["apply", path]);
        assert_eq!(o.status.code(), Some(1), "{path} was accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{path}: expected {want:?} in {err}");
        assert_eq!(t.ruleset_stateless(), before, "{path} changed the ruleset");
    }
    // a filter guestwall cannot enforce (an external ipset)
    t.filter(
        "ipset.xml",
        "<filter name='uses-ipset'><rule action='accept' direction='in'><all ipset='blocked'/></rule></filter>",
    );
    let b = t.binding(1, "uses-ipset", &[]);
    let o = t.guestwall(GW, &["apply", "--filter-dir", &t.filter_dir(), b.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("external ipsets are not supported"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(t.ruleset_stateless(), before, "the ipset filter changed the ruleset");
    // and the port is still filtered
    assert!(t.ping(&g1.ns, &t.peer.ip.clone()));
}

/// A filter that accepts ICMPv6 lets the guest do neighbour discovery, which
/// conntrack leaves untracked (libvirt's automatic state match drops it).
#[test]
fn icmpv6_filter_allows_neighbour_discovery() {
    let t = TestHost::new(1);
    let (g1, peer) = (t.guest(1).clone(), t.peer.clone());
    for (ns, ip) in [(&g1.ns, "2001:db8::1/64"), (&peer.ns, "2001:db8::9/64")] {
        let o = t.exec(ns, &["ip", "-6", "addr", "add", ip, "dev", "eth0", "nodad"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    t.filter(
        "v6.xml",
        "<filter name='icmpv6-only'>
  <rule action='accept' direction='out'><icmpv6/></rule>
  <rule action='drop' direction='inout'><all-ipv6/></rule>
</filter>
",
    );
    let b = t.binding(1, "icmpv6-only", &[]);
    apply(&t, &["--filter-dir", &t.filter_dir(), b.to_str().expect("p")]);
    let rs = t.ruleset();
    let ping6 = |ns: &str, ip: &str| t.exec(ns, &["ping", "-6", "-c", "1", "-W", "2", "-q", ip]).status.success();
    assert!(ping6(&g1.ns, "2001:db8::9"), "the guest could not resolve and ping its peer over IPv6\n{rs}");
    assert!(!ping6(&peer.ns, "2001:db8::1"), "ping in passed: only the guest may start ICMPv6\n{rs}");
}

/// A frame that falls off the end of a protocol sub-chain returns to the
/// root chain (as documented), where a later drop still sees it: a rogue
/// DHCP offer does not slip through allow-dhcp-server.
#[test]
fn subchain_end_returns_to_root() {
    let t = TestHost::new(1);
    let (g1, peer) = (t.guest(1).clone(), t.peer.clone());
    t.filter(
        "dhcp-only.xml",
        "<filter name='dhcp-only'>
  <filterref filter='allow-dhcp-server'/>
  <rule action='drop' direction='inout' priority='1000'/>
</filter>
",
    );
    let b = t.binding(1, "dhcp-only", &[("DHCPSERVER", "192.0.2.254")]);
    apply(&t, &["--filter-dir", &t.filter_dir(), b.to_str().expect("p")]);
    let offer = |src: &str, tag: &str| {
        format!(
            "Ether(src='{}', dst='{}')/IP(src='{src}', dst='{}')/UDP(sport=67, dport=68)/Raw(b'{tag}')",
            peer.mac, g1.mac, g1.ip
        )
    };
    let rs = t.ruleset();
    assert!(
        t.frame_arrives(&peer.ns, &offer("192.0.2.254", "trusted"), &g1.ns, &tagged("trusted")),
        "trusted offer\n{rs}"
    );
    assert!(
        !t.frame_arrives(&peer.ns, &offer("192.0.2.9", "rogue"), &g1.ns, &tagged("rogue")),
        "rogue offer passed\n{rs}"
    );
}

/// A routed tap (no bridge) is filtered in the inet family on the tap.
#[test]
fn routed_tap_is_filtered_on_the_tap() {
    let t = TestHost::new_routed();
    let (g1, peer) = (t.guest(1).clone(), t.peer.clone());
    let b = t.binding(1, "clean-traffic", &[("IP", &g1.ip)]);
    apply(&t, &[b.to_str().expect("p")]);
    let rs = t.ruleset();
    assert!(rs.contains("routed_from_guest") && rs.contains("\"v1\" : goto r_clean_traffic"), "v1 not routed\n{rs}");
    assert!(t.ping(&g1.ns, &peer.ip), "g1 -> peer through the router\n{rs}");
    assert!(t.ping(&peer.ns, &g1.ip), "peer -> g1 (incoming IPv4 is accepted)\n{rs}");
    let gw = t.host_mac("v1");
    let udp = |src_mac: &str, src_ip: &str, tag: &str| {
        format!("Ether(src='{src_mac}', dst='{gw}')/IP(src='{src_ip}', dst='{}')/UDP(dport=9)/Raw(b'{tag}')", peer.ip)
    };
    assert!(t.frame_arrives(&g1.ns, &udp(&g1.mac, &g1.ip, "routed-ok"), &peer.ns, &tagged("routed-ok")), "legit\n{rs}");
    assert!(
        !t.frame_arrives(&g1.ns, &udp(&g1.mac, "198.51.100.50", "routed-ip"), &peer.ns, &tagged("routed-ip")),
        "spoofed IP passed\n{rs}"
    );
    assert!(
        !t.frame_arrives(&g1.ns, &udp("52:54:00:00:00:77", &g1.ip, "routed-mac"), &peer.ns, &tagged("routed-mac")),
        "spoofed MAC passed\n{rs}"
    );
}
