//! Device selection: the RDMA device, port and GID a node uses, from its configuration and what
//! the machine has.

use std::sync::Arc;

use super::config::VerbsConfig;
use super::sys::{self, Context};
use crate::error::{Error, Result};

/// What the device selection found.
#[derive(Debug)]
pub(super) struct Selected {
    pub(super) ctx: Arc<Context>,
    pub(super) port: u8,
    pub(super) port_info: sys::PortInfo,
    pub(super) caps: sys::DeviceCaps,
    pub(super) gid_index: u8,
    pub(super) gid: [u8; 16],
    pub(super) global: bool,
}

impl Selected {
    pub(super) fn describe(&self) -> String {
        format!(
            "{} port {} ({}, GID index {} = {})",
            self.ctx.name,
            self.port,
            if self.port_info.link_layer == sys::LINK_LAYER_INFINIBAND {
                "InfiniBand"
            } else {
                "Ethernet/RoCE"
            },
            self.gid_index,
            gid_text(&self.gid)
        )
    }
}

fn gid_text(g: &[u8; 16]) -> String {
    std::net::Ipv6Addr::from(*g).to_string()
}

fn ipv4_mapped(g: &[u8; 16]) -> bool {
    g[..10].iter().all(|&b| b == 0) && g[10] == 0xff && g[11] == 0xff
}

fn port_state_name(s: u32) -> &'static str {
    match s {
        1 => "DOWN",
        2 => "INIT",
        3 => "ARMED",
        4 => "ACTIVE",
        5 => "ACTIVE_DEFER",
        _ => "unknown",
    }
}

/// Finds the device and port to use (the configured ones, or the first active port), and the
/// GID: the configured index, else for RoCE the first RoCE v2 IPv4-mapped GID.
pub(super) fn select(config: &VerbsConfig) -> Result<Selected> {
    let names = sys::device_names();
    if names.is_empty() {
        return Err(Error::Unsupported(
            "no RDMA device on this machine (ibv_get_device_list found none; is the kernel's RDMA support loaded?)".into(),
        ));
    }
    let candidates: Vec<String> = match &config.device {
        Some(d) if names.iter().any(|n| n == d) => vec![d.clone()],
        Some(d) => {
            return Err(Error::Unsupported(format!(
                "no RDMA device called {d} (DSM_RDMA_DEVICE); this machine has {}",
                names.join(", ")
            )))
        }
        None => names,
    };
    let mut why = Vec::new();
    for name in candidates {
        let ctx = Context::open(&name)?;
        let caps = ctx.caps()?;
        let ports: Vec<u8> = match config.port {
            Some(p) if p >= 1 && p <= caps.ports => vec![p],
            Some(p) => {
                why.push(format!("{name} has no port {p} (it has {})", caps.ports));
                continue;
            }
            None => (1..=caps.ports).collect(),
        };
        for port in ports {
            let info = ctx.port(port)?;
            if !info.active {
                why.push(format!(
                    "{name} port {port} is {}",
                    port_state_name(info.state)
                ));
                continue;
            }
            let (gid_index, gid, global) = pick_gid(&ctx, port, &info, config.gid_index)?;
            return Ok(Selected {
                ctx,
                port,
                port_info: info,
                caps,
                gid_index,
                gid,
                global,
            });
        }
    }
    Err(Error::Unsupported(format!(
        "no active RDMA port: {}",
        why.join("; ")
    )))
}

fn pick_gid(
    ctx: &Context,
    port: u8,
    info: &sys::PortInfo,
    wanted: Option<u8>,
) -> Result<(u8, [u8; 16], bool)> {
    if let Some(i) = wanted {
        return match ctx.gid(port, i32::from(i)) {
            Some(g) if g != [0; 16] => Ok((i, g, true)),
            _ => Err(Error::Unsupported(format!(
                "{} port {port} has no GID at index {i} (DSM_RDMA_GID_INDEX)",
                ctx.name
            ))),
        };
    }
    if info.link_layer == sys::LINK_LAYER_INFINIBAND {
        let g = ctx.gid(port, 0).unwrap_or([0; 16]);
        return Ok((0, g, false));
    }
    let len = info.gid_table_len.clamp(0, 256);
    let gids: Vec<(u8, [u8; 16])> = (0..len)
        .filter_map(|i| ctx.gid(port, i).map(|g| (i as u8, g)))
        .filter(|(_, g)| *g != [0; 16])
        .collect();
    let roce_v2 = |i: u8| {
        std::fs::read_to_string(format!(
            "/sys/class/infiniband/{}/ports/{port}/gid_attrs/types/{i}",
            ctx.name
        ))
        .map(|t| t.trim().eq_ignore_ascii_case("RoCE v2"))
        .unwrap_or(false)
    };
    let pick = gids
        .iter()
        .find(|(i, g)| ipv4_mapped(g) && roce_v2(*i))
        .or_else(|| gids.iter().find(|(_, g)| ipv4_mapped(g)))
        .or_else(|| gids.first());
    match pick {
        Some(&(i, g)) => Ok((i, g, true)),
        None => Err(Error::Unsupported(format!(
            "{} port {port} has no usable GID (is the interface up with an address?)",
            ctx.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_gids_are_recognised() {
        let mut g = [0u8; 16];
        g[10] = 0xff;
        g[11] = 0xff;
        g[12..].copy_from_slice(&[192, 168, 1, 2]);
        assert!(ipv4_mapped(&g));
        assert_eq!(gid_text(&g), "::ffff:192.168.1.2");
        g[0] = 0xfe;
        assert!(!ipv4_mapped(&g));
        assert!(!ipv4_mapped(&[0; 16]));
    }

    #[test]
    fn port_states_have_names() {
        assert_eq!(port_state_name(1), "DOWN");
        assert_eq!(port_state_name(4), "ACTIVE");
        assert_eq!(port_state_name(99), "unknown");
    }
}
