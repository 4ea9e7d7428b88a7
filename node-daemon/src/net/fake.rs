//! An in-memory kernel for unit tests of the web role: every seam trait of [`super`], with the
//! kernel behaviours the planner relies on (ipip's fallback `tunl0` appearing when an ipip link
//! is asked for, EEXIST for a duplicate address, new devices inheriting `default` settings) and
//! a count of writes, so tests can prove that a second apply writes nothing.

use std::collections::BTreeMap;

use nftables::schema::{NfCmd, NfListObject, NfObject, Nftables};

use super::addr::{Addr, Addrs};
use super::arp_guard::{GuardState, NftTables, TABLE};
use super::devconf::{DevConf, DevConfs, Knob};
use super::link::{IpipProbe, Link, Links, TUNL0};
use crate::error::{Errno, Error};

/// The fake kernel.
#[derive(Clone, Debug)]
pub struct FakeKernel {
    /// Devices by index.
    pub links: BTreeMap<u32, Link>,
    /// IPv4 addresses.
    pub addrs: Vec<Addr>,
    /// Interfaces of default routes.
    pub default_oifs: Vec<u32>,
    /// `net.ipv4.conf.all`.
    pub all: DevConf,
    /// `net.ipv4.conf.default` (what new devices get).
    pub default_conf: DevConf,
    /// Whether the kernel can load `ipip`.
    pub ipip_available: bool,
    /// Whether `nft` is installed.
    pub nft_installed: bool,
    /// lvstun's nft objects.
    pub nft: GuardState,
    /// Writes made (each successful or refused mutating request counts).
    pub writes: usize,
    next_index: u32,
}

/// A refusal as the real host reports it (rtnetlink's, through the VRRP crate's rule).
fn err(op: &str, errno: Errno) -> Error {
    Error::from(lvstun_vrrp::Error::Kernel {
        op: op.to_owned(),
        errno,
    })
}

impl FakeKernel {
    /// A host with `lo` and one uplink `eth0` (index 2, MTU 1500, address `uplink_ip`/25,
    /// default route through it), all settings 0, ipip not loaded yet.
    pub fn new(uplink_ip: &str) -> FakeKernel {
        let mut k = FakeKernel {
            links: BTreeMap::new(),
            addrs: Vec::new(),
            default_oifs: vec![2],
            all: DevConf::default(),
            default_conf: DevConf::default(),
            ipip_available: true,
            nft_installed: true,
            nft: GuardState::default(),
            writes: 0,
            next_index: 3,
        };
        k.links.insert(
            1,
            Link {
                index: 1,
                name: "lo".into(),
                kind: None,
                up: true,
                noarp: true,
                loopback: true,
                mtu: 65536,
                devconf: Some(DevConf::default()),
            },
        );
        k.links.insert(
            2,
            Link {
                index: 2,
                name: "eth0".into(),
                kind: Some("veth".into()),
                up: true,
                noarp: false,
                loopback: false,
                mtu: 1500,
                devconf: Some(DevConf::default()),
            },
        );
        k.addrs.push(Addr {
            index: 2,
            address: uplink_ip.parse().unwrap_or([198, 51, 100, 10].into()),
            prefix_len: 25,
        });
        k
    }

    /// Adds a device as the kernel would (settings from `default`); returns its index.
    pub fn add_link(&mut self, name: &str, kind: &str, up: bool, noarp: bool) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        self.links.insert(
            index,
            Link {
                index,
                name: name.into(),
                kind: Some(kind.into()),
                up,
                noarp,
                loopback: false,
                mtu: if kind == "ipip" { 1480 } else { 1500 },
                devconf: Some(self.default_conf),
            },
        );
        index
    }

    /// The device with this name.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.name == name)
    }

    /// A knob of a named device.
    pub fn conf(&self, name: &str, knob: Knob) -> Option<u32> {
        self.link(name)?.devconf.map(|c| c.get(knob))
    }

    /// Sets a knob of a named device without counting a write (test setup).
    pub fn preset(&mut self, name: &str, knob: Knob, value: u32) {
        if let Some(link) = self.links.values_mut().find(|l| l.name == name)
            && let Some(conf) = link.devconf.as_mut()
        {
            conf.set(knob, value);
        }
    }

    /// The IPv4 addresses of a named device.
    pub fn addrs_of(&self, name: &str) -> Vec<Addr> {
        let Some(index) = self.link(name).map(|l| l.index) else {
            return Vec::new();
        };
        self.addrs
            .iter()
            .copied()
            .filter(|a| a.index == index)
            .collect()
    }
}

impl Links for FakeKernel {
    async fn links(&mut self) -> Result<Vec<Link>, Error> {
        Ok(self.links.values().cloned().collect())
    }

    async fn default_route_interfaces(&mut self) -> Result<Vec<u32>, Error> {
        Ok(self.default_oifs.clone())
    }

    async fn create_dummy(&mut self, name: &str) -> Result<(), Error> {
        self.writes += 1;
        if self.link(name).is_some() {
            return Err(err("create dummy", Errno::EEXIST));
        }
        self.add_link(name, "dummy", false, true);
        Ok(())
    }

    async fn probe_ipip(&mut self) -> Result<IpipProbe, Error> {
        self.writes += 1;
        if !self.ipip_available {
            return Ok(IpipProbe::Refused(Errno::from_code(-95)));
        }
        if self.link(TUNL0).is_none() {
            self.add_link(TUNL0, "ipip", false, true);
        }
        Ok(IpipProbe::Exists)
    }

    async fn set_up(&mut self, index: u32, up: bool) -> Result<(), Error> {
        self.writes += 1;
        let link = self
            .links
            .get_mut(&index)
            .ok_or_else(|| err("set link", Errno::from_code(-19)))?;
        link.up = up;
        Ok(())
    }

    async fn delete_link(&mut self, index: u32) -> Result<(), Error> {
        self.writes += 1;
        self.links
            .remove(&index)
            .ok_or_else(|| err("delete link", Errno::from_code(-19)))?;
        self.addrs.retain(|a| a.index != index);
        Ok(())
    }
}

impl Addrs for FakeKernel {
    async fn addrs(&mut self) -> Result<Vec<Addr>, Error> {
        Ok(self.addrs.clone())
    }

    async fn add_addr(&mut self, addr: Addr) -> Result<(), Error> {
        self.writes += 1;
        if self
            .addrs
            .iter()
            .any(|a| a.index == addr.index && a.address == addr.address)
        {
            return Err(err("add address", Errno::EEXIST));
        }
        self.addrs.push(addr);
        Ok(())
    }

    async fn del_addr(&mut self, addr: Addr) -> Result<(), Error> {
        self.writes += 1;
        let before = self.addrs.len();
        self.addrs.retain(|a| *a != addr);
        if self.addrs.len() == before {
            return Err(err("delete address", Errno::from_code(-99)));
        }
        Ok(())
    }
}

impl DevConfs for FakeKernel {
    fn read_all(&mut self) -> Result<DevConf, Error> {
        Ok(self.all)
    }

    async fn set_devconf(&mut self, index: u32, knob: Knob, value: u32) -> Result<(), Error> {
        self.writes += 1;
        let conf = self
            .links
            .get_mut(&index)
            .and_then(|l| l.devconf.as_mut())
            .ok_or_else(|| err("set devconf", Errno::from_code(-19)))?;
        conf.set(knob, value);
        Ok(())
    }
}

impl NftTables for FakeKernel {
    async fn read_tables(&mut self) -> Result<GuardState, Error> {
        if !self.nft_installed {
            return Err(Error::NftMissing("nft".into()));
        }
        Ok(self.nft.clone())
    }

    async fn run_transaction(&mut self, batch: &Nftables<'static>) -> Result<(), Error> {
        if !self.nft_installed {
            return Err(Error::NftMissing("nft".into()));
        }
        self.writes += 1;
        let mut objects = self.nft.objects.clone();
        for cmd in batch.objects.iter() {
            match cmd {
                NfObject::CmdObject(NfCmd::Add(obj)) => {
                    let exists = matches!(obj, NfListObject::Table(t)
                        if objects.iter().any(|o| matches!(o, NfListObject::Table(u) if u.family == t.family)));
                    if !exists {
                        objects.push(obj.clone());
                    }
                }
                NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(t))) if t.name == TABLE => {
                    objects.retain(|o| match o {
                        NfListObject::Table(u) => u.family != t.family,
                        NfListObject::Chain(c) => c.family != t.family,
                        NfListObject::Rule(r) => r.family != t.family,
                        _ => true,
                    });
                }
                other => {
                    return Err(Error::Nft {
                        command: "fake nft".into(),
                        detail: format!("unexpected command {other:?}"),
                    });
                }
            }
        }
        // nft lists per table: table, chains, rules; keep that order as the real one does.
        let mut ordered = Vec::new();
        for family in super::arp_guard::FAMILIES {
            let fam = |o: &NfListObject| match o {
                NfListObject::Table(t) => t.family == family,
                NfListObject::Chain(c) => c.family == family,
                NfListObject::Rule(r) => r.family == family,
                _ => false,
            };
            ordered.extend(
                objects
                    .iter()
                    .filter(|o| fam(o) && matches!(o, NfListObject::Table(_)))
                    .cloned(),
            );
            ordered.extend(
                objects
                    .iter()
                    .filter(|o| fam(o) && matches!(o, NfListObject::Chain(_)))
                    .cloned(),
            );
            ordered.extend(
                objects
                    .iter()
                    .filter(|o| fam(o) && matches!(o, NfListObject::Rule(_)))
                    .cloned(),
            );
        }
        self.nft = GuardState {
            objects: ordered,
            unknown: false,
        };
        Ok(())
    }
}
