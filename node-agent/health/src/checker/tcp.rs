//! TCP connect check (keepalived TCP_CHECK): success is a completed handshake.

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

use crate::error::ProbeError;

pub(super) async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, ProbeError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| ProbeError::from_io(&e))?;
    if let Some(local) = super::bind_addr(source) {
        socket.bind(local).map_err(|e| ProbeError::from_io(&e))?;
    }
    socket
        .connect(addr)
        .await
        .map_err(|e| ProbeError::from_io(&e))
}

pub(super) async fn probe(addr: SocketAddr, source: Option<IpAddr>) -> Result<(), ProbeError> {
    let stream = connect(addr, source).await?;
    // Abort instead of an orderly close: the handshake already proved the server accepts,
    // and a reset spares both ends the FIN exchange and the director a TIME_WAIT socket per
    // probe (thousands per second at scale). HAProxy closes its checks the same way.
    let _ = stream.set_zero_linger();
    drop(stream);
    Ok(())
}
