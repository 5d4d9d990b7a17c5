//! Quantities as people read them: sizes in binary units chosen by magnitude.

/// The binary units, each 1024 times the one before.
const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// How many bytes one `unit` (`B`, `KiB`, … `EiB`, case-insensitive; also `KB`/`MB`/… read
/// as their binary namesakes, as the PCE and most tools mean them) holds; `None` for a unit
/// that is not a size.
pub fn unit_bytes(unit: &str) -> Option<f64> {
    let u = unit.trim().to_ascii_lowercase();
    let u = u.strip_suffix("ytes").map_or(u.clone(), |s| s.to_string());
    let base = match u.as_str() {
        "b" | "byte" => 0,
        "kib" | "kb" => 1,
        "mib" | "mb" => 2,
        "gib" | "gb" => 3,
        "tib" | "tb" => 4,
        "pib" | "pb" => 5,
        "eib" | "eb" => 6,
        _ => return None,
    };
    Some(1024f64.powi(base))
}

/// `bytes` in the largest binary unit that keeps the number at 1 or more: `512 B`,
/// `1.5 KiB`, `2.14 TiB`; at most two decimals, trailing zeros dropped. A negative size
/// keeps its sign; a value that is not finite is written as it is.
pub fn binary_size(bytes: f64) -> String {
    if !bytes.is_finite() {
        return format!("{bytes}");
    }
    let mut v = bytes.abs();
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    // 1023.999 KiB rounds to "1024 KiB": step up so the number stays below 1024.
    if (v * 100.0).round() / 100.0 >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    let text = if unit == 0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    let sign = if bytes < 0.0 { "-" } else { "" };
    format!("{sign}{text} {}", UNITS[unit])
}

/// Whether a measured field (the last segment of its path) counts bytes: the PCE's flow
/// byte counters (`dst_bi`, `dst_bo`, their `src_` kin), `bytes` and names ending in
/// `_bytes`.
pub fn is_byte_field(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    matches!(
        last,
        "bytes" | "dst_bi" | "dst_bo" | "src_bi" | "src_bo" | "bytes_in" | "bytes_out"
    ) || last.ends_with("_bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_the_unit_their_magnitude_calls_for() {
        assert_eq!(binary_size(0.0), "0 B");
        assert_eq!(binary_size(512.0), "512 B");
        assert_eq!(binary_size(1023.0), "1023 B");
        assert_eq!(binary_size(1024.0), "1 KiB");
        assert_eq!(binary_size(1536.0), "1.5 KiB");
        assert_eq!(binary_size(10.0 * 1_048_576.0), "10 MiB");
        // The demo's `2241535.92 MiB`.
        assert_eq!(binary_size(2_241_535.92 * 1_048_576.0), "2.14 TiB");
        assert_eq!(binary_size(1024.0 * 1024.0 - 1.0), "1 MiB");
        assert_eq!(binary_size(-2048.0), "-2 KiB");
        assert_eq!(binary_size(f64::INFINITY), "inf");
    }

    #[test]
    fn units_read_as_sizes() {
        assert_eq!(unit_bytes("MiB"), Some(1_048_576.0));
        assert_eq!(unit_bytes("bytes"), Some(1.0));
        assert_eq!(unit_bytes("GB"), Some(1_073_741_824.0));
        assert_eq!(unit_bytes("Mbps"), None);
        assert!(is_byte_field("dst_bo") && is_byte_field("flow.sent_bytes"));
        assert!(!is_byte_field("num_connections"));
    }
}
