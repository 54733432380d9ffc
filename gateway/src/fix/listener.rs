//! What QuickFIX's listening socket needs that its settings cannot say.
//!
//! QuickFIX (the C++ engine inside the `quickfix` crate 0.2.2) binds its acceptor to the
//! wildcard address whatever `SocketAcceptHost` says, and does not expose the socket. So, right
//! after the acceptor starts and before any connection exists, the socket is found among the
//! process's open files (`/proc/self/fd`, Linux) and given:
//! - a send timeout ([`super::outbound::SEND_TIMEOUT`]), which the connections it accepts
//!   inherit, so that a send to a participant that stops reading cannot block for long;
//! - when the configured FIX address is a specific IPv4 address (127.0.0.1 in the defaults), a
//!   socket filter (classic BPF, inherited by accepted connections too) that drops every packet
//!   not addressed to it: the port answers only on the configured address, as the
//!   configuration says, even though the socket is bound to all of them.

use std::net::SocketAddr;

/// What could be done to the listening socket.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ListenerSetup {
    /// The send timeout is set.
    pub send_timeout: bool,
    /// Packets to other addresses are dropped (or the configured address is the wildcard).
    pub address_only: bool,
}

/// Finds QuickFIX's listening socket for `addr`'s port and sets it up. Both flags are false
/// when it cannot be found (no `/proc`: not Linux).
#[cfg(target_os = "linux")]
pub(crate) fn set_up(addr: SocketAddr) -> ListenerSetup {
    use std::mem::ManuallyDrop;
    use std::os::fd::{AsRawFd, FromRawFd};
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return ListenerSetup::default() };
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the fd is open (listed just now) and is a socket; ManuallyDrop never closes
        // it, and only getsockname, getpeername and setsockopt are called on it.
        let socket = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        let listening_here = socket
            .local_addr()
            .is_ok_and(|l| l.port() == addr.port() && (l.ip() == addr.ip() || l.ip().is_unspecified()));
        if !listening_here || socket.peer_addr().is_ok() {
            continue;
        }
        let send_timeout = socket.set_write_timeout(Some(super::outbound::SEND_TIMEOUT)).is_ok();
        let bound_wide = socket.local_addr().is_ok_and(|l| l.ip().is_unspecified());
        let address_only = match addr.ip() {
            _ if !bound_wide => true,
            ip if ip.is_unspecified() => true,
            std::net::IpAddr::V4(ip) => attach_destination_filter(socket.as_raw_fd(), u32::from(ip)),
            std::net::IpAddr::V6(_) => false,
        };
        return ListenerSetup { send_timeout, address_only };
    }
    ListenerSetup::default()
}

/// Not available off Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn set_up(_addr: SocketAddr) -> ListenerSetup {
    ListenerSetup::default()
}

/// Attaches a classic BPF socket filter that keeps only IPv4 packets whose destination is
/// `ip` (host order of the address's bytes): `ld [net + 16]; jeq ip ? keep : drop`.
#[cfg(target_os = "linux")]
fn attach_destination_filter(fd: i32, ip: u32) -> bool {
    // The offset of the network header in BPF loads (linux/filter.h: SKF_NET_OFF).
    const SKF_NET_OFF: i32 = -0x10_0000;
    let load_destination = libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: (SKF_NET_OFF + 16) as u32,
    };
    let is_ours =
        libc::sock_filter { code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, jt: 0, jf: 1, k: ip };
    let keep = libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: u32::MAX };
    let drop = libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 };
    let mut program = [load_destination, is_ours, keep, drop];
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: `fd` is an open socket; the kernel copies the program during the call, and
    // `program` outlives it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    rc == 0
}
