//! Congestion control behind one trait: NewReno (RFC 5681) and CUBIC
//! (RFC 9438, the default), selectable per connection (TCP_CONGESTION).
//!
//! The algorithms are stateless objects; their per-connection state lives
//! in the connection block (`cwnd`, `ssthresh`, `cwnd_cnt` and the `cc_*`
//! fields), so it survives a restart with the rest of the connection. Loss
//! detection and recovery (fast retransmit, NewReno partial ACKs, the SACK
//! scoreboard) are the core's; an algorithm only says how the window grows
//! on ACKs and how far it drops on a congestion event.

use crate::block::ConnBlock;

/// A congestion control algorithm.
pub trait CongestionControl: Sync {
    /// Its name, as TCP_CONGESTION spells it.
    fn name(&self) -> &'static str;

    /// `acked` new bytes were acknowledged outside loss recovery at time
    /// `now` (ns): grow `c.cwnd` (slow start below `c.ssthresh`,
    /// congestion avoidance above).
    fn on_ack(&self, c: &mut ConnBlock, acked: u32, now: u64);

    /// A congestion event (loss detected by duplicate ACKs or SACK, or a
    /// retransmission timeout) with `flight` bytes outstanding: returns the
    /// new slow-start threshold and updates the algorithm's state. The
    /// caller sets `cwnd` (to the threshold for fast recovery, to one
    /// segment after a timeout).
    fn ssthresh(&self, c: &mut ConnBlock, flight: u32, now: u64) -> u32;

    /// A retransmission timeout happened (after [`ssthresh`](Self::ssthresh)).
    fn on_rto(&self, c: &mut ConnBlock) {
        c.cwnd_cnt = 0;
    }
}

/// The algorithms, by the number stored in the block (and given in
/// SETOPT CONGESTION: 0 CUBIC, 1 NewReno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CcAlgo {
    /// CUBIC (RFC 9438).
    Cubic = 0,
    /// NewReno (RFC 5681, RFC 6582).
    NewReno = 1,
}

impl CcAlgo {
    /// The algorithm for a stored or requested number (`None` if unknown).
    pub fn from_raw(v: u64) -> Option<CcAlgo> {
        match v {
            0 => Some(CcAlgo::Cubic),
            1 => Some(CcAlgo::NewReno),
            _ => None,
        }
    }

    /// The implementation.
    pub fn get(self) -> &'static dyn CongestionControl {
        match self {
            CcAlgo::Cubic => &Cubic,
            CcAlgo::NewReno => &NewReno,
        }
    }
}

/// The implementation for a block's stored algorithm (CUBIC for garbage).
pub fn algo(c: &ConnBlock) -> &'static dyn CongestionControl {
    CcAlgo::from_raw(u64::from(c.cc_algo))
        .unwrap_or(CcAlgo::Cubic)
        .get()
}

/// Slow start (RFC 5681 §3.1, counting bytes as Linux does): grows `cwnd`
/// by what was acknowledged, up to `ssthresh`; returns what is left over
/// for congestion avoidance.
fn slow_start(c: &mut ConnBlock, acked: u32) -> u32 {
    if c.cwnd >= c.ssthresh {
        return acked;
    }
    let room = c.ssthresh - c.cwnd;
    let used = acked.min(room);
    c.cwnd += used;
    acked - used
}

/// NewReno: additive increase of one segment per window of data
/// acknowledged, halving on a congestion event (RFC 5681).
pub struct NewReno;

impl CongestionControl for NewReno {
    fn name(&self) -> &'static str {
        "reno"
    }

    fn on_ack(&self, c: &mut ConnBlock, acked: u32, _now: u64) {
        let acked = slow_start(c, acked);
        if acked == 0 {
            return;
        }
        // Appropriate byte counting (RFC 3465): one MSS per cwnd bytes.
        c.cwnd_cnt = c.cwnd_cnt.saturating_add(acked);
        while c.cwnd_cnt >= c.cwnd && c.cwnd > 0 {
            c.cwnd_cnt -= c.cwnd;
            c.cwnd = c.cwnd.saturating_add(c.snd_mss);
        }
    }

    fn ssthresh(&self, c: &mut ConnBlock, flight: u32, _now: u64) -> u32 {
        c.cwnd_cnt = 0;
        (flight / 2).max(2 * c.snd_mss)
    }
}

/// CUBIC's constant C (RFC 9438 §4.1).
pub const CUBIC_C: f64 = 0.4;
/// CUBIC's multiplicative decrease factor β (RFC 9438 §4.6).
pub const CUBIC_BETA: f64 = 0.7;

/// CUBIC (RFC 9438): after a congestion event the window follows
/// `W_cubic(t) = C·(t − K)³ + W_max` with `K = ∛((W_max − cwnd_epoch)/C)`,
/// but never less than the Reno-friendly estimate `W_est`.
pub struct Cubic;

fn f(bits: u64) -> f64 {
    f64::from_bits(bits)
}

impl Cubic {
    /// `W_cubic(t)` in segments, `t` seconds into the epoch.
    pub fn w_cubic(t: f64, k: f64, w_max: f64) -> f64 {
        CUBIC_C * (t - k).powi(3) + w_max
    }
}

impl CongestionControl for Cubic {
    fn name(&self) -> &'static str {
        "cubic"
    }

    fn on_ack(&self, c: &mut ConnBlock, acked: u32, now: u64) {
        let acked = slow_start(c, acked);
        if acked == 0 || c.snd_mss == 0 {
            return;
        }
        let mss = f64::from(c.snd_mss);
        let cwnd = f64::from(c.cwnd) / mss;
        let segs = f64::from(acked) / mss;
        if c.cc_epoch == 0 {
            // Start of a congestion-avoidance stage (§4.2).
            c.cc_epoch = now.max(1);
            let mut w_max = f(c.cc_wmax);
            let k = if w_max > cwnd {
                ((w_max - cwnd) / CUBIC_C).cbrt()
            } else {
                w_max = cwnd;
                0.0
            };
            c.cc_wmax = w_max.to_bits();
            c.cc_k = k.to_bits();
            c.cc_west = cwnd.to_bits();
            if f(c.cc_prior) <= 0.0 {
                c.cc_prior = cwnd.to_bits();
            }
        }
        let t = now.saturating_sub(c.cc_epoch) as f64 / 1e9;
        let rtt = if c.srtt_us > 0 {
            f64::from(c.srtt_us) / 1e6
        } else {
            0.1
        };
        let (k, w_max) = (f(c.cc_k), f(c.cc_wmax));
        // Reno-friendly estimate (§4.3).
        let alpha = if f(c.cc_west) >= f(c.cc_prior) {
            1.0
        } else {
            3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA)
        };
        let w_est = f(c.cc_west) + alpha * segs / cwnd;
        c.cc_west = w_est.to_bits();
        let new = if Cubic::w_cubic(t, k, w_max) < w_est {
            // Reno-friendly region: cwnd = W_est.
            w_est.max(cwnd)
        } else {
            // Concave or convex region (§4.4, §4.5): towards the target.
            let target = Cubic::w_cubic(t + rtt, k, w_max).clamp(cwnd, 1.5 * cwnd);
            cwnd + (target - cwnd) / cwnd * segs
        };
        let bytes = (new * mss).min(f64::from(u32::MAX / 2));
        c.cwnd = (bytes as u32).max(c.cwnd);
    }

    fn ssthresh(&self, c: &mut ConnBlock, _flight: u32, _now: u64) -> u32 {
        let mss = f64::from(c.snd_mss.max(1));
        let cwnd = f64::from(c.cwnd) / mss;
        // Fast convergence (§4.7).
        let w_max = if cwnd < f(c.cc_wmax) {
            cwnd * (1.0 + CUBIC_BETA) / 2.0
        } else {
            cwnd
        };
        c.cc_wmax = w_max.to_bits();
        c.cc_prior = cwnd.to_bits();
        c.cc_epoch = 0;
        c.cwnd_cnt = 0;
        ((f64::from(c.cwnd) * CUBIC_BETA) as u32).max(2 * c.snd_mss)
    }

    fn on_rto(&self, c: &mut ConnBlock) {
        c.cc_epoch = 0;
        c.cwnd_cnt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;
    const RTT_NS: u64 = 100_000_000;

    fn block(cwnd_segs: u32) -> ConnBlock {
        ConnBlock {
            snd_mss: MSS,
            cwnd: cwnd_segs * MSS,
            ssthresh: u32::MAX,
            srtt_us: (RTT_NS / 1000) as u32,
            ..ConnBlock::default()
        }
    }

    /// One RTT of ACKs, one per segment of the window, spread over the RTT.
    fn one_rtt(cc: &dyn CongestionControl, c: &mut ConnBlock, now: &mut u64) {
        let n = c.cwnd / MSS;
        for i in 0..n {
            cc.on_ack(c, MSS, *now + RTT_NS * u64::from(i) / u64::from(n));
        }
        *now += RTT_NS;
    }

    #[test]
    fn reno_slow_start_then_linear() {
        let cc = &NewReno;
        let mut c = block(10);
        c.ssthresh = 40 * MSS;
        let mut now = 1;
        one_rtt(cc, &mut c, &mut now);
        assert_eq!(c.cwnd, 20 * MSS);
        one_rtt(cc, &mut c, &mut now);
        assert_eq!(c.cwnd, 40 * MSS);
        one_rtt(cc, &mut c, &mut now);
        assert_eq!(c.cwnd, 41 * MSS);
        assert_eq!(cc.ssthresh(&mut c, 41 * MSS, now), 20 * MSS + 500);
        assert_eq!(cc.ssthresh(&mut c, MSS, now), 2 * MSS);
    }

    /// The window after a loss follows RFC 9438: W_cubic(t) = C·(t − K)³ +
    /// W_max with K = ∛(W_max(1 − β)/C) (eq. 1 and 2, C = 0.4, β = 0.7),
    /// or the Reno-friendly W_est where that is larger (§4.3: α =
    /// 3(1 − β)/(1 + β) per RTT until W_est reaches the pre-loss window,
    /// 1 after), sampled once per RTT over 10 s.
    #[test]
    fn cubic_follows_rfc9438_window() {
        let cc = &Cubic;
        let mut c = block(100);
        c.srtt_us = 100_000;
        let rtt = 0.1;
        let rtt_ns = 100_000_000u64;
        let mut now = 1_000_000_000u64;
        let w = c.cwnd;
        c.ssthresh = cc.ssthresh(&mut c, w, now);
        assert_eq!(c.ssthresh, 70 * MSS);
        c.cwnd = c.ssthresh;
        let w_max = 100.0;
        let k = (w_max * (1.0 - CUBIC_BETA) / CUBIC_C).cbrt();
        assert!((k - 75f64.cbrt()).abs() < 1e-9);
        let alpha = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
        let t1 = (w_max - 70.0) / alpha * rtt; // W_est reaches W_max
        let w_est = |t: f64| {
            if t < t1 {
                70.0 + alpha * t / rtt
            } else {
                w_max + (t - t1) / rtt
            }
        };
        let start = now;
        let (mut cubic_seen, mut reno_seen) = (false, false);
        for _ in 0..100 {
            let n = (c.cwnd / MSS).max(1);
            for i in 0..n {
                cc.on_ack(&mut c, MSS, now + rtt_ns * u64::from(i) / u64::from(n));
            }
            now += rtt_ns;
            let t = (now - start) as f64 / 1e9;
            let cub = Cubic::w_cubic(t, k, w_max);
            let expect = cub.max(w_est(t));
            if cub > w_est(t) + 2.0 {
                cubic_seen = true;
            } else if w_est(t) > cub + 2.0 {
                reno_seen = true;
            }
            let got = f64::from(c.cwnd) / f64::from(MSS);
            // The target is W_cubic(t + RTT): up to one RTT ahead.
            let ahead = Cubic::w_cubic(t + rtt, k, w_max) - cub;
            assert!(
                got >= expect - 1.5 && got <= expect + ahead.abs() + 1.5,
                "t={t:.2}: cwnd {got:.2} vs expected {expect:.2} (W_cubic {cub:.2}, W_est {:.2})",
                w_est(t)
            );
        }
        assert!(cubic_seen && reno_seen, "both regions exercised");
        // Convex growth well beyond W_max at the end.
        assert!(f64::from(c.cwnd) / f64::from(MSS) > 170.0);
        assert!((f64::from_bits(c.cc_k) - k).abs() < 0.05);
    }

    /// With a small W_max and a short RTT, Reno's estimate is ahead of the
    /// cubic curve: the window follows W_est = W_max·β + α·t/RTT with
    /// α = 3(1 − β)/(1 + β) (RFC 9438 §4.3).
    #[test]
    fn cubic_reno_friendly_region() {
        let cc = &Cubic;
        let mut c = block(20);
        c.srtt_us = 10_000; // 10 ms
        let rtt = 10_000_000u64;
        let mut now = 5_000_000_000;
        let w = c.cwnd;
        c.ssthresh = cc.ssthresh(&mut c, w, now);
        c.cwnd = c.ssthresh;
        assert_eq!(c.cwnd, 14 * MSS);
        let alpha = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
        let k = (20.0 * (1.0 - CUBIC_BETA) / CUBIC_C).cbrt();
        let start = now;
        for _ in 0..10 {
            // A window's worth of bytes acknowledged over one RTT.
            let mut left = c.cwnd;
            let n = c.cwnd.div_ceil(MSS);
            let mut i = 0;
            while left > 0 {
                let a = left.min(MSS);
                cc.on_ack(&mut c, a, now + rtt * i / u64::from(n));
                left -= a;
                i += 1;
            }
            now += rtt;
            let t = (now - start) as f64 / 1e9;
            let w_est = 20.0 * CUBIC_BETA + alpha * t / 0.01;
            assert!(
                Cubic::w_cubic(t, k, 20.0) < w_est,
                "in the Reno-friendly region"
            );
            let got = f64::from(c.cwnd) / f64::from(MSS);
            assert!((got - w_est).abs() < 0.3, "t={t}: {got} vs W_est {w_est}");
        }
    }

    #[test]
    fn cubic_fast_convergence_lowers_w_max() {
        let cc = &Cubic;
        let mut c = block(100);
        c.cwnd = cc.ssthresh(&mut c, 0, 1);
        // A second loss below the previous W_max.
        cc.ssthresh(&mut c, 0, 2);
        assert!((f64::from_bits(c.cc_wmax) - 70.0 * 1.7 / 2.0).abs() < 1e-9);
        assert_eq!(CcAlgo::from_raw(1).unwrap().get().name(), "reno");
        assert_eq!(algo(&ConnBlock::default()).name(), "cubic");
    }
}
