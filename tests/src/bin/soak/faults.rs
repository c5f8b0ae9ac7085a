//! The faults the soak injects, one at a time, and how each part comes
//! back, as a supervisor (systemd, the engine's restart policy) or the
//! network would bring it back.

use super::Soak;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio::time::Instant;

/// How long a killed part stays down before it is started again.
const DOWN: Duration = Duration::from_secs(5);
/// How long an agent stays cut off the network.
const CUT: Duration = Duration::from_secs(20);

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// An agent SIGKILLed, started again after [`DOWN`].
    KillAgent,
    /// An agent cut off the network for [`CUT`].
    CutAgent,
    /// A controller replica SIGKILLed, started again after [`DOWN`].
    KillController,
    /// RabbitMQ SIGKILLed, started again after [`DOWN`].
    KillBroker,
    /// Postgres SIGKILLed, started again after [`DOWN`].
    KillPostgres,
}

/// Every kind of fault, in the order of the report.
pub const ALL: [Fault; 5] = [
    Fault::KillAgent,
    Fault::CutAgent,
    Fault::KillController,
    Fault::KillBroker,
    Fault::KillPostgres,
];

impl Fault {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillAgent => "agent SIGKILLed",
            Fault::CutAgent => "agent cut off 20 s",
            Fault::KillController => "controller replica SIGKILLed",
            Fault::KillBroker => "broker SIGKILLed",
            Fault::KillPostgres => "Postgres SIGKILLed",
        }
    }
}

/// One fault injected: what, on which container, and when (the database's
/// clock is the host's, so recovery is read against its timestamps).
#[derive(Debug, Clone)]
pub struct Injected {
    /// The kind.
    pub fault: Fault,
    /// The container it hit.
    pub target: String,
    /// When it was injected.
    pub at: DateTime<Utc>,
}

/// Injects faults at random intervals of `min..=max` until `until`, each
/// undone before the next; what was injected.
pub async fn inject(soak: &Soak, until: Instant, min: Duration, max: Duration) -> Vec<Injected> {
    let mut injected = Vec::new();
    loop {
        let spread = max.saturating_sub(min).as_millis() as u64;
        let wait = min + Duration::from_millis(soak.draw(spread + 1));
        if Instant::now() + wait >= until {
            return injected;
        }
        tokio::time::sleep(wait).await;
        let fault = ALL[soak.draw(ALL.len() as u64) as usize];
        match inject_one(soak, fault).await {
            Ok(one) => {
                eprintln!("soak: {} ({})", fault.name(), one.target);
                injected.push(one);
            }
            Err(e) => eprintln!("soak: injecting {} failed: {e:#}", fault.name()),
        }
    }
}

/// Injects `fault` and undoes it (start again, reconnect).
async fn inject_one(soak: &Soak, fault: Fault) -> anyhow::Result<Injected> {
    let (target, replica) = target_of(soak, fault).await;
    let at = Utc::now();
    match fault {
        Fault::CutAgent => {
            soak.d.read().await.disconnect(&target)?;
            tokio::time::sleep(CUT).await;
            soak.d.read().await.reconnect(&target)?;
        }
        Fault::KillController => {
            soak.d.read().await.kill(&target)?;
            if soak.d.read().await.current_replica() == replica {
                soak.d.write().await.use_replica(1 - replica).await?;
            }
            tokio::time::sleep(DOWN).await;
            soak.d.read().await.start_again(&target)?;
        }
        _ => {
            soak.d.read().await.kill(&target)?;
            tokio::time::sleep(DOWN).await;
            soak.d.read().await.start_again(&target)?;
        }
    }
    Ok(Injected { fault, target, at })
}

/// The container `fault` hits, drawn at random where there are several,
/// and for a controller which replica it is (0 for any other part).
async fn target_of(soak: &Soak, fault: Fault) -> (String, usize) {
    let d = soak.d.read().await;
    match fault {
        Fault::KillAgent | Fault::CutAgent => {
            let agents = d.agent_names();
            (agents[soak.draw(agents.len() as u64) as usize].clone(), 0)
        }
        Fault::KillController => {
            let replica = soak.draw(2) as usize;
            (d.controller(replica), replica)
        }
        Fault::KillBroker => (d.infra_names().1, 0),
        Fault::KillPostgres => (d.infra_names().0, 0),
    }
}
