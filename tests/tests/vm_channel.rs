//! The VM harness's command channel (`strata_tests::vm`) carries every
//! byte: scripts reach the guest whole and their output and status come
//! back whole, however much of it there is and whatever it looks like
//! (the channel's own markers included).

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use strata_tests::vm::{self, BootOpts, Vm};
use strata_tests::Netns;

/// Bytes sent each way in the bulk checks.
const BULK: usize = 2 << 20;

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Random bytes from the kernel.
fn random(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut data).unwrap();
    data
}

/// Standard base64 decoded, line breaks skipped; `None` on anything else.
fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// What `f` panicked with, without the panic printed.
fn panic_message(f: impl FnOnce()) -> String {
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    panic::set_hook(hook);
    match r {
        Ok(()) => panic!("it did not panic"),
        Err(e) => e
            .downcast::<String>()
            .map(|s| *s)
            .unwrap_or_else(|_| "a panic without a message".into()),
    }
}

/// Where `got` first differs from `want`, for a failure message.
fn first_difference(got: &[u8], want: &[u8]) -> String {
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(i) => format!(
            "byte {i} differs ({} bytes, {} wanted)",
            got.len(),
            want.len()
        ),
        None => format!("{} bytes, {} wanted", got.len(), want.len()),
    }
}

#[test]
fn the_command_channel_carries_every_byte() {
    if let Err(why) = vm::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let ns = Netns::new();
    let vm = Vm::boot(&ns, BootOpts::default());

    // Output of every shape, and statuses.
    assert_eq!(vm.run("true"), (0, String::new()));
    assert_eq!(vm.run("printf abc; exit 3"), (3, "abc".to_string()));
    assert_eq!(
        vm.run("echo out; echo err >&2"),
        (0, "out\nerr\n".to_string())
    );
    assert_eq!(vm.run("printf '\\n\\n\\n'"), (0, "\n\n\n".to_string()));
    let lookalike = "__VM_BEGIN__ 1\n\n__VM_DONE__ 1 0\n__VM_SPAWNED__ 1 1\n__VM_READY__\n";
    assert_eq!(
        vm.run(&format!("printf '%s' '{lookalike}'")),
        (0, lookalike.to_string())
    );
    let all_ascii: String = (1u8..0x80).map(char::from).collect();
    let quoted = strata_tests::vm::sh_quote(&all_ascii);
    assert_eq!(
        vm.run(&format!("printf '%s' {quoted}")),
        (0, all_ascii.clone())
    );
    assert_eq!(vm.run_ok("printf 'h\\303\\251'"), "hé");

    // A file of every byte value, in a new directory.
    let bytes: Vec<u8> = (0..=255).collect();
    vm.write_file("/tmp/a/b/bytes", &bytes);
    let sum = vm.run_ok("sha256sum /tmp/a/b/bytes");
    assert_eq!(
        sum.split_whitespace().next(),
        Some(sha256_hex(&bytes).as_str())
    );

    // A command past its timeout is killed in the guest; the failure says
    // so with what it printed, and the channel goes on.
    let msg = panic_message(|| {
        vm.run_timeout("echo started; sleep 60", Duration::from_secs(2));
    });
    assert!(
        msg.contains("killed there") && msg.contains("started"),
        "{msg}"
    );
    assert_eq!(vm.run("echo still here"), (0, "still here\n".to_string()));

    // Many small commands in a row: the run that lost a line.
    let t0 = Instant::now();
    for i in 0..200 {
        assert_eq!(vm.run(&format!("echo {i}")), (0, format!("{i}\n")));
    }
    eprintln!(
        "vm_channel: 200 small commands in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // A long script.
    let filler: String = (0..20_000).map(|i| format!("# line {i}\n")).collect();
    let script = format!("{filler}echo end of a {} byte script", filler.len());
    assert_eq!(
        vm.run_ok(&script),
        format!("end of a {} byte script\n", filler.len())
    );

    // The host's bytes to the guest, and back.
    let data = random(BULK);
    let t0 = Instant::now();
    vm.write_file("/tmp/blob", &data);
    let sum = vm.run_ok("sha256sum /tmp/blob");
    assert_eq!(
        sum.split_whitespace().next(),
        Some(sha256_hex(&data).as_str()),
        "the file written in the guest differs"
    );
    let sent = t0.elapsed();
    let t0 = Instant::now();
    let back = vm.run_ok("base64 /tmp/blob");
    let back = unbase64(&back).unwrap_or_else(|| vm.fail("the guest's base64 does not decode"));
    assert!(
        back == data,
        "read back: {}",
        first_difference(&back, &data)
    );
    eprintln!(
        "vm_channel: {} MB to the guest in {:.1} s, back in {:.1} s",
        BULK >> 20,
        sent.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );

    // The guest's bytes to the host.
    let out = vm.run_ok(&format!(
        "head -c {BULK} /dev/urandom > /tmp/made && sha256sum /tmp/made && base64 /tmp/made"
    ));
    let (sum, text) = out.split_once('\n').unwrap();
    let made = unbase64(text).unwrap_or_else(|| vm.fail("the guest's base64 does not decode"));
    assert_eq!(made.len(), BULK);
    assert_eq!(
        sum.split_whitespace().next(),
        Some(sha256_hex(&made).as_str()),
        "the guest's file came back changed"
    );
}
