//! Virtio 1.x over PCI: finding a device's structures in its PCI
//! configuration space (virtio specification §4.1.4, "Virtio Structure PCI
//! Capabilities").
//!
//! A modern virtio PCI device describes where its common configuration,
//! notification area, ISR status and device-specific configuration live
//! with vendor-specific capabilities in the PCI capability list: each
//! names a BAR, an offset into it and a length. The configuration space is
//! the device's to write, so [`VirtioCaps::parse`] trusts nothing in it:
//! every pointer is bounded by the bytes given, the walk by the number of
//! capabilities that fit, and a BAR number above 5 is refused.

/// PCI vendor id of virtio devices.
pub const VENDOR: u16 = 0x1af4;
/// PCI device id of a modern (virtio 1.x only) network device
/// (0x1040 + device type 1, §4.1.2.1).
pub const DEVICE_NET: u16 = 0x1041;
/// PCI device id of a transitional network device, which has the modern
/// capabilities too.
pub const DEVICE_NET_TRANSITIONAL: u16 = 0x1000;

/// Bytes of the PCI configuration space header and capabilities that
/// [`VirtioCaps::parse`] reads (the conventional space).
pub const CONFIG_LEN: usize = 256;

const STATUS: usize = 0x06;
const STATUS_CAP_LIST: u8 = 1 << 4;
const CAP_PTR: usize = 0x34;
const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
/// `struct virtio_pci_cap` is 16 bytes; the notify capability adds a
/// 4-byte multiplier.
const CAP_LEN: usize = 16;
const NOTIFY_CAP_LEN: usize = 20;
/// Capabilities start past the 64-byte header and are 4-byte aligned, so
/// no more than this many fit in the conventional space.
const MAX_CAPS: usize = (CONFIG_LEN - 64) / 4;

/// A range of one BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRange {
    /// The BAR (0 to 5).
    pub bar: u8,
    /// Offset into it.
    pub offset: u32,
    /// Bytes.
    pub length: u32,
}

impl BarRange {
    /// The range's end, from the BAR's start.
    pub fn end(&self) -> u64 {
        u64::from(self.offset) + u64::from(self.length)
    }
}

/// Where a modern virtio PCI device keeps its structures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioCaps {
    /// `struct virtio_pci_common_cfg` (§4.1.4.3).
    pub common: BarRange,
    /// The notification area (§4.1.4.4).
    pub notify: BarRange,
    /// A queue's doorbell is at `queue_notify_off` times this from the
    /// notification area's start.
    pub notify_multiplier: u32,
    /// The ISR status byte (§4.1.4.5), used only without MSI-X.
    pub isr: Option<BarRange>,
    /// The device-specific configuration (for a network device, its MAC,
    /// link status and MTU: §5.1.4).
    pub device: Option<BarRange>,
}

/// Why a configuration space describes no usable virtio device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapError {
    /// Fewer bytes than a configuration header.
    Truncated,
    /// Not a virtio network device: the vendor and device ids found.
    NotVirtioNet {
        /// PCI vendor id.
        vendor: u16,
        /// PCI device id.
        device: u16,
    },
    /// The device has no capability list.
    NoCapabilities,
    /// The list points outside the space, or loops.
    BadList,
    /// A structure the driver needs is not described (`"common"` or
    /// `"notify"`).
    Missing(&'static str),
}

impl core::fmt::Display for CapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CapError::Truncated => f.write_str("the PCI configuration space is cut short"),
            CapError::NotVirtioNet { vendor, device } => write!(
                f,
                "device {vendor:04x}:{device:04x} is not a virtio network device (1af4:1041)"
            ),
            CapError::NoCapabilities => f.write_str("the device has no PCI capabilities"),
            CapError::BadList => f.write_str("the PCI capability list is malformed"),
            CapError::Missing(what) => {
                write!(f, "the device describes no virtio {what} configuration")
            }
        }
    }
}

impl std::error::Error for CapError {}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl VirtioCaps {
    /// Reads the virtio capabilities of a network device from its PCI
    /// configuration space `config` (at least the 64-byte header; the
    /// conventional 256 bytes to find capabilities). The first capability
    /// of each type with a valid BAR is taken, as §4.1.4 asks of a driver.
    pub fn parse(config: &[u8]) -> Result<VirtioCaps, CapError> {
        if config.len() < 64 {
            return Err(CapError::Truncated);
        }
        let (vendor, device) = (le16(config, 0), le16(config, 2));
        if vendor != VENDOR || !matches!(device, DEVICE_NET | DEVICE_NET_TRANSITIONAL) {
            return Err(CapError::NotVirtioNet { vendor, device });
        }
        if config[STATUS] & STATUS_CAP_LIST == 0 {
            return Err(CapError::NoCapabilities);
        }
        let (mut common, mut notify, mut isr, mut dev) = (None, None, None, None);
        let mut at = usize::from(config[CAP_PTR] & !3);
        let mut seen = 0;
        while at != 0 {
            seen += 1;
            if at < 64 || seen > MAX_CAPS || at + 2 > config.len() {
                return Err(CapError::BadList);
            }
            let next = usize::from(config[at + 1] & !3);
            if config[at] == CAP_VENDOR && at + CAP_LEN <= config.len() {
                let cap_len = usize::from(config[at + 2]);
                let range = BarRange {
                    bar: config[at + 4],
                    offset: le32(config, at + 8),
                    length: le32(config, at + 12),
                };
                // BARs 0 to 5; others are reserved and to be ignored.
                if cap_len >= CAP_LEN && range.bar <= 5 {
                    match config[at + 3] {
                        CFG_COMMON if common.is_none() => common = Some(range),
                        CFG_NOTIFY
                            if notify.is_none()
                                && cap_len >= NOTIFY_CAP_LEN
                                && at + NOTIFY_CAP_LEN <= config.len() =>
                        {
                            notify = Some((range, le32(config, at + CAP_LEN)));
                        }
                        CFG_ISR if isr.is_none() => isr = Some(range),
                        CFG_DEVICE if dev.is_none() => dev = Some(range),
                        _ => {}
                    }
                }
            }
            at = next;
        }
        let common = common.ok_or(CapError::Missing("common"))?;
        let (notify, notify_multiplier) = notify.ok_or(CapError::Missing("notify"))?;
        Ok(VirtioCaps {
            common,
            notify,
            notify_multiplier,
            isr,
            device: dev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration space like qemu's modern virtio-net-pci: an MSI-X
    /// capability, then the five virtio ones in BAR 4.
    fn qemu_like() -> Vec<u8> {
        let mut c = vec![0u8; CONFIG_LEN];
        c[0..2].copy_from_slice(&VENDOR.to_le_bytes());
        c[2..4].copy_from_slice(&DEVICE_NET.to_le_bytes());
        c[STATUS] = STATUS_CAP_LIST;
        c[CAP_PTR] = 0x98;
        // MSI-X at 0x98, then virtio caps at 0xa4, 0x84, 0x70, 0x60, 0x4c.
        c[0x98] = 0x11;
        c[0x99] = 0xa4;
        let caps = [
            (0xa4, 5, 0, 0, 0x84, CAP_LEN),
            (0x84, CFG_COMMON, 0x0000, 0x1000, 0x70, CAP_LEN),
            (0x70, CFG_ISR, 0x1000, 0x1000, 0x60, CAP_LEN),
            (0x60, CFG_DEVICE, 0x2000, 0x1000, 0x4c, CAP_LEN),
            (0x4c, CFG_NOTIFY, 0x3000, 0x1000, 0x00, NOTIFY_CAP_LEN),
        ];
        for (at, ty, off, len, next, cap_len) in caps {
            c[at] = CAP_VENDOR;
            c[at + 1] = next;
            c[at + 2] = cap_len as u8;
            c[at + 3] = ty;
            c[at + 4] = 4;
            c[at + 8..at + 12].copy_from_slice(&(off as u32).to_le_bytes());
            c[at + 12..at + 16].copy_from_slice(&(len as u32).to_le_bytes());
        }
        c[0x4c + 16..0x4c + 20].copy_from_slice(&4u32.to_le_bytes());
        c
    }

    #[test]
    fn finds_qemus_structures() {
        let caps = VirtioCaps::parse(&qemu_like()).unwrap();
        let r = |offset, length| BarRange {
            bar: 4,
            offset,
            length,
        };
        assert_eq!(caps.common, r(0, 0x1000));
        assert_eq!(caps.isr, Some(r(0x1000, 0x1000)));
        assert_eq!(caps.device, Some(r(0x2000, 0x1000)));
        assert_eq!(caps.notify, r(0x3000, 0x1000));
        assert_eq!(caps.notify_multiplier, 4);
    }

    #[test]
    fn refuses_other_devices_and_broken_lists() {
        let mut c = qemu_like();
        c[2] = 0x40;
        assert!(matches!(
            VirtioCaps::parse(&c),
            Err(CapError::NotVirtioNet { .. })
        ));
        assert_eq!(VirtioCaps::parse(&c[..40]), Err(CapError::Truncated));
        let mut c = qemu_like();
        c[STATUS] = 0;
        assert_eq!(VirtioCaps::parse(&c), Err(CapError::NoCapabilities));
        // A loop: the last capability points back at the first.
        let mut c = qemu_like();
        c[0x4d] = 0x98;
        assert_eq!(VirtioCaps::parse(&c), Err(CapError::BadList));
        // A pointer into the header.
        let mut c = qemu_like();
        c[CAP_PTR] = 0x10;
        assert_eq!(VirtioCaps::parse(&c), Err(CapError::BadList));
        // Without a notify capability (its type changed to a reserved one).
        let mut c = qemu_like();
        c[0x4c + 3] = 7;
        assert_eq!(VirtioCaps::parse(&c), Err(CapError::Missing("notify")));
        // A reserved BAR is ignored.
        let mut c = qemu_like();
        c[0x84 + 4] = 6;
        assert_eq!(VirtioCaps::parse(&c), Err(CapError::Missing("common")));
    }

    #[test]
    fn a_short_space_ends_the_walk_cleanly() {
        let c = qemu_like();
        for n in 64..CONFIG_LEN {
            let _ = VirtioCaps::parse(&c[..n]);
        }
    }
}
