//! Just enough rtnetlink (rtnetlink(7)) for a step's network: a veth pair with one end in another network
//! namespace, addresses, links up and a default route. A socket works in the network namespace it was
//! opened in, so the helper opens one before it leaves the host's namespace and one after.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;

const IFF_UP: u32 = 0x1;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// `struct ifinfomsg`: family, type, index, flags and the mask of flags to change.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&(index as i32).to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
    b
}

/// Appends an attribute, padded to 4 bytes.
fn attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// Appends a nested attribute whose payload `fill` writes.
fn nested(buf: &mut Vec<u8>, ty: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0, 0, 0]);
    fill(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&ty.to_ne_bytes());
}

fn name_attr(buf: &mut Vec<u8>, name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() > 15 || name.contains('\0') || name.contains('/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
    }
    let mut z = name.as_bytes().to_vec();
    z.push(0);
    attr(buf, IFLA_IFNAME, &z);
    Ok(())
}

/// A NETLINK_ROUTE socket bound in the network namespace that was current when it was opened.
#[derive(Debug)]
pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
}

impl RouteSocket {
    pub fn open() -> io::Result<RouteSocket> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            // NETLINK_ROUTE is protocol 0, the default.
            None,
        )?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0))?;
        Ok(RouteSocket { fd, seq: 0 })
    }

    /// Sends one request and waits for its acknowledgement; returns the payloads of the replies of
    /// `reply_type` that came before it.
    fn request(&mut self, ty: u16, flags: u16, body: &[u8], reply_type: Option<u16>) -> io::Result<Vec<Vec<u8>>> {
        self.seq += 1;
        let seq = self.seq;
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        rustix::net::sendto(&self.fd, &msg, SendFlags::empty(), &SocketAddrNetlink::new(0, 0))?;
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::empty())?;
            let mut at = 0;
            while at + 16 <= n {
                let word = |o: usize| u32::from_ne_bytes(buf[at + o..at + o + 4].try_into().unwrap_or_default());
                let len = word(0) as usize;
                let mtype = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let mseq = word(8);
                if len < 16 || at + len > n {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
                }
                let payload = &buf[at + 16..at + len];
                if mseq == seq {
                    match mtype {
                        NLMSG_ERROR => {
                            let code = i32::from_ne_bytes(
                                payload.get(..4).and_then(|b| b.try_into().ok()).unwrap_or_default(),
                            );
                            return if code == 0 { Ok(replies) } else { Err(io::Error::from_raw_os_error(-code)) };
                        }
                        NLMSG_DONE => return Ok(replies),
                        t if Some(t) == reply_type => replies.push(payload.to_vec()),
                        _ => {}
                    }
                }
                at += len.next_multiple_of(4);
            }
        }
    }

    /// Creates the veth pair `host` (here) and `peer`, the peer in the network namespace open as `netns`.
    pub fn create_veth(&mut self, host: &str, peer: &str, netns: BorrowedFd<'_>, mtu: Option<u32>) -> io::Result<()> {
        let mut body = ifinfomsg(0, 0, 0);
        name_attr(&mut body, host)?;
        if let Some(m) = mtu {
            attr(&mut body, IFLA_MTU, &m.to_ne_bytes());
        }
        let mut err = Ok(());
        nested(&mut body, IFLA_LINKINFO, |b| {
            attr(b, IFLA_INFO_KIND, b"veth\0");
            nested(b, IFLA_INFO_DATA, |b| {
                nested(b, VETH_INFO_PEER, |b| {
                    b.extend_from_slice(&ifinfomsg(0, 0, 0));
                    err = name_attr(b, peer);
                    if let Some(m) = mtu {
                        attr(b, IFLA_MTU, &m.to_ne_bytes());
                    }
                    attr(b, IFLA_NET_NS_FD, &(netns.as_raw_fd() as u32).to_ne_bytes());
                });
            });
        });
        err?;
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &body, None).map(drop)
    }

    /// Deletes the link `name`; a missing link is not an error.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut body = ifinfomsg(0, 0, 0);
        name_attr(&mut body, name)?;
        match self.request(RTM_DELLINK, 0, &body, None) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other.map(drop),
        }
    }

    /// The index of the link `name`.
    pub fn link_index(&mut self, name: &str) -> io::Result<u32> {
        let mut body = ifinfomsg(0, 0, 0);
        name_attr(&mut body, name)?;
        let replies = self.request(RTM_GETLINK, 0, &body, Some(RTM_NEWLINK))?;
        let reply =
            replies.first().filter(|r| r.len() >= 8).ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        Ok(i32::from_ne_bytes([reply[4], reply[5], reply[6], reply[7]]) as u32)
    }

    /// Brings the link up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.request(RTM_NEWLINK, 0, &ifinfomsg(index, IFF_UP, IFF_UP), None).map(drop)
    }

    /// Adds `addr/prefix` to the link.
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut body = vec![libc::AF_INET as u8, prefix, 0, RT_SCOPE_UNIVERSE];
        body.extend_from_slice(&index.to_ne_bytes());
        attr(&mut body, IFA_LOCAL, &addr.octets());
        attr(&mut body, IFA_ADDRESS, &addr.octets());
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &body, None).map(drop)
    }

    /// Adds the default route through `gateway` on the link.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr, index: u32) -> io::Result<()> {
        let mut body = vec![libc::AF_INET as u8, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST];
        body.extend_from_slice(&0u32.to_ne_bytes());
        attr(&mut body, RTA_GATEWAY, &gateway.octets());
        attr(&mut body, RTA_OIF, &index.to_ne_bytes());
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &body, None).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_lengths_cover_their_payload() {
        let mut b = Vec::new();
        attr(&mut b, 1, b"veth\0");
        assert_eq!(b.len(), 12, "4 header + 5 payload, padded to 12");
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 9);
        let mut n = Vec::new();
        nested(&mut n, 18, |x| attr(x, 1, b"ab"));
        assert_eq!(u16::from_ne_bytes([n[0], n[1]]) as usize, n.len());
        assert!(name_attr(&mut Vec::new(), "a-name-too-long-for-linux").is_err());
        assert!(name_attr(&mut Vec::new(), "").is_err());
    }
}
