//! Counters of a pure protocol core: one `u64` per named counter in a
//! fixed array, so counting is an index and an add, and a layer's shell
//! copies the whole array into its control block for `strata stats`
//! without knowing what each slot means.

/// Defines `Stat` (an enum naming each counter, with `ALL`, `COUNT` and
/// a snake_case `name()`) and `Stats` (the array) in the calling module.
/// The first argument names the layer, for the docs.
///
/// ```
/// strata_ipc::layer_stats! { "examplen";
///     /// Packets in.
///     RxPackets => "rx_packets",
///     /// Packets dropped for being short.
///     Truncated => "truncated",
/// }
/// let mut s = Stats::default();
/// s.inc(Stat::Truncated);
/// assert_eq!(s.iter().collect::<Vec<_>>(), [("rx_packets", 0), ("truncated", 1)]);
/// ```
#[macro_export]
macro_rules! layer_stats {
    ($layer:literal; $( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        #[doc = concat!("One counter of ", $layer, ". Every dropped packet is counted under exactly one drop reason, so the counters explain where packets went.")]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Stat {
            $( $(#[$doc])* $variant, )*
        }

        impl Stat {
            /// Every counter, in index order.
            pub const ALL: &'static [Stat] = &[ $( Stat::$variant, )* ];
            /// Number of counters.
            pub const COUNT: usize = Stat::ALL.len();

            /// The counter's `snake_case` name, as `strata stats` shows it.
            pub fn name(self) -> &'static str {
                match self {
                    $( Stat::$variant => $name, )*
                }
            }
        }

        // Every counter must fit a layer's block in the fabric, under a
        // name `strata stats` can show and tell apart.
        const _: () = assert!(Stat::COUNT <= $crate::layout::LAYER_COUNTERS);
        const _: () = assert!(
            $crate::stats::counter_names_ok(&[ $( $name, )* ]),
            "counter names must be unique snake_case of at most COUNTER_NAME_LEN bytes"
        );

        #[doc = concat!($layer, "'s counters.")]
        #[derive(Clone, Debug)]
        pub struct Stats {
            counters: [u64; Stat::COUNT],
        }

        impl Default for Stats {
            fn default() -> Self {
                Stats {
                    counters: [0; Stat::COUNT],
                }
            }
        }

        #[allow(dead_code)]
        impl Stats {
            /// The value of one counter.
            pub fn get(&self, s: Stat) -> u64 {
                self.counters[s as usize]
            }

            /// Every counter in [`Stat::ALL`] order, so the shell can copy
            /// them into the fabric in one go.
            pub fn as_array(&self) -> &[u64; Stat::COUNT] {
                &self.counters
            }

            /// `(name, value)` for every counter.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                Stat::ALL.iter().map(move |&s| (s.name(), self.get(s)))
            }

            /// Adds one to a counter.
            #[inline]
            pub fn inc(&mut self, s: Stat) {
                self.add(s, 1);
            }

            /// Adds `n` to a counter.
            #[inline]
            pub fn add(&mut self, s: Stat, n: u64) {
                let c = &mut self.counters[s as usize];
                *c = c.wrapping_add(n);
            }

            /// Sets a counter (for counts kept elsewhere, and levels).
            #[inline]
            pub fn set(&mut self, s: Stat, v: u64) {
                self.counters[s as usize] = v;
            }
        }
    };
}

/// Whether counter names are fit for the fabric: each at most
/// [`COUNTER_NAME_LEN`](crate::layout::COUNTER_NAME_LEN) bytes of
/// `snake_case` (lowercase ASCII, digits, `_`), no two alike.
/// [`layer_stats!`] checks its names with it at compile time.
pub const fn counter_names_ok(names: &[&str]) -> bool {
    let mut i = 0;
    while i < names.len() {
        let a = names[i].as_bytes();
        if a.is_empty() || a.len() > crate::layout::COUNTER_NAME_LEN {
            return false;
        }
        let mut k = 0;
        while k < a.len() {
            let c = a[k];
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_') {
                return false;
            }
            k += 1;
        }
        let mut j = 0;
        while j < i {
            let b = names[j].as_bytes();
            if a.len() == b.len() {
                let mut k = 0;
                while k < a.len() && a[k] == b[k] {
                    k += 1;
                }
                if k == a.len() {
                    return false;
                }
            }
            j += 1;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::counter_names_ok;

    #[test]
    fn counter_names_must_be_short_unique_snake_case() {
        assert!(counter_names_ok(&[
            "in_segs",
            "out_rsts",
            "ipv4_bad_checksum2"
        ]));
        assert!(!counter_names_ok(&["in_segs", "in_segs"]), "duplicate");
        assert!(!counter_names_ok(&["InSegs"]), "not snake case");
        assert!(!counter_names_ok(&["in-segs"]), "not snake case");
        assert!(!counter_names_ok(&[""]), "empty");
        assert!(!counter_names_ok(&["a_name_that_is_longer_than_32_bytes"]));
        assert!(counter_names_ok(&["a_name_of_exactly_thirty_two_byt"]));
    }
}
