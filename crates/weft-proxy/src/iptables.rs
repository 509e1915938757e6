//! Istio's traffic capture (istio-iptables, REDIRECT mode) for the current network namespace:
//! outbound TCP to 15001, inbound TCP to 15006, the proxy's own uid/gid exempt, the health
//! and metrics ports excluded. Applied atomically with `iptables-restore --noflush`.

use std::io::Write;
use std::process::{Command, Stdio};

/// Settings of `weft iptables`, named after istio-iptables' flags.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// `-p`: outbound capture port.
    pub proxy_port: u16,
    /// `-z`: inbound capture port.
    pub inbound_port: u16,
    /// `-u`: the proxy's uid (exempt from capture).
    pub proxy_uid: u32,
    /// `-g`: the proxy's gid.
    pub proxy_gid: u32,
    /// `-b`: inbound ports to capture, `*` for all.
    pub include_inbound_ports: String,
    /// `-d`: inbound ports not to capture.
    pub exclude_inbound_ports: String,
    /// `-i`: outbound IP ranges to capture, `*` for all.
    pub include_outbound_ranges: String,
    /// `-x`: outbound IP ranges not to capture.
    pub exclude_outbound_ranges: String,
    /// `-q`: outbound ports to capture (in addition to the ranges).
    pub include_outbound_ports: String,
    /// `-o`: outbound ports not to capture.
    pub exclude_outbound_ports: String,
    /// `--redirect-dns` (`ISTIO_META_DNS_CAPTURE`): DNS to these nameservers (the pod's
    /// resolv.conf) goes to the proxy's DNS port 15053, UDP and TCP; empty: no DNS capture.
    pub dns_servers: Vec<std::net::IpAddr>,
}

impl Default for CaptureOptions {
    /// The sidecar injector's defaults: `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020`.
    fn default() -> Self {
        CaptureOptions {
            proxy_port: 15001,
            inbound_port: 15006,
            proxy_uid: 1337,
            proxy_gid: 1337,
            include_inbound_ports: "*".into(),
            exclude_inbound_ports: "15090,15021,15020".into(),
            include_outbound_ranges: "*".into(),
            exclude_outbound_ranges: String::new(),
            include_outbound_ports: String::new(),
            exclude_outbound_ports: String::new(),
            dns_servers: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "cannot run {cmd}: {source}; install iptables (apt-get install iptables) and run as root (NET_ADMIN)"
    )]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("bad {flag} value {value:?}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

fn list(s: &str) -> Vec<&str> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn ports(flag: &'static str, s: &str) -> Result<Vec<u16>, CaptureError> {
    list(s)
        .into_iter()
        .filter(|p| *p != "*")
        .map(|p| {
            p.parse().map_err(|_| CaptureError::Flag {
                flag,
                value: s.to_string(),
                reason: format!("{p} is not a port number"),
            })
        })
        .collect()
}

fn cidrs(flag: &'static str, s: &str) -> Result<Vec<ipnet::IpNet>, CaptureError> {
    list(s)
        .into_iter()
        .filter(|p| *p != "*")
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| CaptureError::Flag {
                    flag,
                    value: s.to_string(),
                    reason: format!("{p} is not an IP range"),
                })
        })
        .collect()
}

/// The `iptables-restore` input for the nat table (IPv4), as istio-iptables generates it.
pub fn rules(o: &CaptureOptions) -> Result<String, CaptureError> {
    let mut r = vec![
        "*nat".to_string(),
        ":ISTIO_INBOUND - [0:0]".into(),
        ":ISTIO_REDIRECT - [0:0]".into(),
        ":ISTIO_IN_REDIRECT - [0:0]".into(),
        ":ISTIO_OUTPUT - [0:0]".into(),
    ];
    // Inbound.
    let exclude_in = ports("-d", &o.exclude_inbound_ports)?;
    let include_in = o.include_inbound_ports.trim();
    if !include_in.is_empty() {
        r.push("-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN".into());
        if include_in == "*" {
            for p in &exclude_in {
                r.push(format!("-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN"));
            }
            r.push("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".into());
        } else {
            for p in ports("-b", include_in)? {
                if !exclude_in.contains(&p) {
                    r.push(format!(
                        "-A ISTIO_INBOUND -p tcp --dport {p} -j ISTIO_IN_REDIRECT"
                    ));
                }
            }
        }
    }
    r.push(format!(
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        o.proxy_port
    ));
    r.push(format!(
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        o.inbound_port
    ));
    r.push("-A PREROUTING -p tcp -j ISTIO_INBOUND".into());
    r.push("-A OUTPUT -p tcp -j ISTIO_OUTPUT".into());
    // Outbound.
    for p in ports("-o", &o.exclude_outbound_ports)? {
        r.push(format!("-A ISTIO_OUTPUT -p tcp --dport {p} -j RETURN"));
    }
    r.push("-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN".into());
    for (flag, id) in [("--uid-owner", o.proxy_uid), ("--gid-owner", o.proxy_gid)] {
        r.push(format!(
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner {flag} {id} -j ISTIO_IN_REDIRECT"
        ));
        r.push(format!(
            "-A ISTIO_OUTPUT -o lo -m owner ! {flag} {id} -j RETURN"
        ));
        r.push(format!("-A ISTIO_OUTPUT -m owner {flag} {id} -j RETURN"));
    }
    r.push("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN".into());
    // DNS to the pod's nameservers: TCP here (after the proxy's own traffic returned), UDP in
    // OUTPUT with the same exemptions, as istio-iptables' --redirect-dns.
    let dns: Vec<_> = o.dns_servers.iter().filter(|ip| ip.is_ipv4()).collect();
    for ns in &dns {
        r.push(format!(
            "-A ISTIO_OUTPUT -p tcp --dport 53 -d {ns}/32 -j REDIRECT --to-ports 15053"
        ));
    }
    if !dns.is_empty() {
        for (flag, id) in [("--uid-owner", o.proxy_uid), ("--gid-owner", o.proxy_gid)] {
            r.push(format!(
                "-A OUTPUT -p udp --dport 53 -m owner {flag} {id} -j RETURN"
            ));
        }
        for ns in &dns {
            r.push(format!(
                "-A OUTPUT -p udp --dport 53 -d {ns}/32 -j REDIRECT --to-ports 15053"
            ));
        }
    }
    for p in ports("-q", &o.include_outbound_ports)? {
        r.push(format!(
            "-A ISTIO_OUTPUT -p tcp --dport {p} -j ISTIO_REDIRECT"
        ));
    }
    for c in cidrs("-x", &o.exclude_outbound_ranges)? {
        if c.addr().is_ipv4() {
            r.push(format!("-A ISTIO_OUTPUT -d {c} -j RETURN"));
        }
    }
    let include = o.include_outbound_ranges.trim();
    if include == "*" {
        r.push("-A ISTIO_OUTPUT -j ISTIO_REDIRECT".into());
    } else {
        for c in cidrs("-i", include)? {
            if c.addr().is_ipv4() {
                r.push(format!("-A ISTIO_OUTPUT -d {c} -j ISTIO_REDIRECT"));
            }
        }
        r.push("-A ISTIO_OUTPUT -j RETURN".into());
    }
    r.push("COMMIT".into());
    Ok(r.join("\n") + "\n")
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String, CaptureError> {
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let name = format!("{cmd} {}", args.join(" "));
    let mut child = c.spawn().map_err(|source| CaptureError::Spawn {
        cmd: name.clone(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| CaptureError::Spawn {
                cmd: name.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| CaptureError::Spawn {
            cmd: name.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(CaptureError::Failed {
            cmd: name,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs the capture rules (removing any earlier Istio rules first).
pub fn install(o: &CaptureOptions) -> Result<String, CaptureError> {
    let text = rules(o)?;
    cleanup()?;
    run("iptables-restore", &["--noflush"], Some(&text))?;
    Ok(text)
}

/// Removes the capture rules and chains (idempotent).
pub fn cleanup() -> Result<(), CaptureError> {
    let current = run("iptables-save", &["-t", "nat"], None)?;
    let mut out = vec!["*nat".to_string()];
    let mut any = false;
    for line in current.lines() {
        let dns = line.starts_with("-A OUTPUT -p udp") && line.contains("--dport 53 ");
        if ((line.starts_with("-A PREROUTING") || line.starts_with("-A OUTPUT"))
            && line.contains("-j ISTIO_"))
            || dns
        {
            out.push(line.replacen("-A ", "-D ", 1));
            any = true;
        }
    }
    let chains: Vec<&str> = current
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with("ISTIO_"))
        .collect();
    for c in &chains {
        out.push(format!("-F {c}"));
    }
    for c in &chains {
        out.push(format!("-X {c}"));
    }
    any |= !chains.is_empty();
    if !any {
        return Ok(());
    }
    out.push("COMMIT".into());
    run(
        "iptables-restore",
        &["--noflush"],
        Some(&(out.join("\n") + "\n")),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_match_istio_golden_shape() {
        let r = rules(&CaptureOptions::default()).unwrap();
        for want in [
            "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
            "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
            "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
            "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
            "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "-A PREROUTING -p tcp -j ISTIO_INBOUND",
            "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
            "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        ] {
            assert!(r.lines().any(|l| l == want), "missing {want:?} in\n{r}");
        }
        // The inbound excludes come before the catch-all redirect.
        let pos = |s: &str| r.find(s).unwrap();
        assert!(
            pos("--dport 15020 -j RETURN") < pos("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
        );
        assert!(r.starts_with("*nat\n") && r.ends_with("COMMIT\n"));
    }

    #[test]
    fn include_and_exclude_flags() {
        let o = CaptureOptions {
            include_inbound_ports: "8080,9090".into(),
            exclude_outbound_ranges: "10.0.0.0/8".into(),
            include_outbound_ranges: "192.168.0.0/16".into(),
            exclude_outbound_ports: "5432".into(),
            ..CaptureOptions::default()
        };
        let r = rules(&o).unwrap();
        assert!(r.contains("-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT"));
        assert!(!r.contains("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"));
        assert!(r.contains("-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN"));
        assert!(r.contains("-A ISTIO_OUTPUT -d 192.168.0.0/16 -j ISTIO_REDIRECT"));
        assert!(r.contains("-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN"));
        assert!(!r.contains("15053"), "no DNS capture unless asked");
        let dns = rules(&CaptureOptions {
            dns_servers: vec!["10.0.0.10".parse().unwrap(), "::1".parse().unwrap()],
            ..CaptureOptions::default()
        })
        .unwrap();
        let pos = |needle: &str| {
            dns.find(needle)
                .unwrap_or_else(|| panic!("{needle} in {dns}"))
        };
        assert!(
            pos("-A OUTPUT -p udp --dport 53 -m owner --uid-owner 1337 -j RETURN")
                < pos("-A OUTPUT -p udp --dport 53 -d 10.0.0.10/32 -j REDIRECT --to-ports 15053")
        );
        assert!(
            pos("-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN")
                < pos(
                    "-A ISTIO_OUTPUT -p tcp --dport 53 -d 10.0.0.10/32 -j REDIRECT --to-ports 15053"
                )
        );
        assert!(!dns.contains("::1"), "IPv4 rules only");
    }

    #[test]
    fn bad_flags_are_named() {
        let o = CaptureOptions {
            exclude_inbound_ports: "15090,abc".into(),
            ..CaptureOptions::default()
        };
        let e = rules(&o).unwrap_err().to_string();
        assert!(e.contains("-d") && e.contains("abc"), "{e}");
    }
}
