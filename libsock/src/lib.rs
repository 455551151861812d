//! libsock: the strata client library (sockets arrive with the sockets issue).
