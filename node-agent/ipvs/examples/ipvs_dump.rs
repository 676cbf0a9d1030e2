//! Prints the IPVS table as this crate sees it (debugging aid: compare with `ipvsadm -Ln`).

use kube_lvs_ipvs::IpvsHandle;

fn main() -> anyhow::Result<()> {
    let h = IpvsHandle::new()?;
    println!("info: {:?}", h.info()?);
    println!("timeouts: {:?}", h.timeouts()?);
    for svc in h.services().dump()? {
        println!("{svc:?}");
        for d in h.destinations(svc.config.key).dump()? {
            println!("    {d:?}");
        }
    }
    println!("daemons: {:?}", h.sync_daemons().list()?);
    println!("stats: {:?}", h.stats());
    Ok(())
}
