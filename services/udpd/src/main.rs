//! udpd: UDP (the sockets issue fills it in). Until then it runs as a
//! supervised placeholder that frees anything sent to it.

use strata_ipc::{service, LayerId, Service};

fn main() {
    let svc = Service::start("udpd").unwrap_or_else(|e| service::die("udpd", &e));
    service::run_placeholder(&svc, &[LayerId::IPD, LayerId::SOCKD]);
}
