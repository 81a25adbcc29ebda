//! The file names EVerest writes, and the dates in them.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::types::LeafCertificateType;

static NAME_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The EVerest random file-name suffix:
/// `M<MM>_D<DD>_Y<YYYY>_H<hh>_M<mm>_S<ss>_i<n>_r<rand>`, in UTC.
pub fn random_suffix() -> String {
    let now = crate::x509::now();
    let (year, month, day) = civil_from_days(now.div_euclid(86_400));
    let secs = now.rem_euclid(86_400);
    let mut rand = [0u8; 4];
    let _ = openssl::rand::rand_bytes(&mut rand);
    let rand = (u32::from_le_bytes(rand) & 0x7fff_ffff).max(1);
    format!(
        "M{month:02}_D{day:02}_Y{year:04}_H{:02}_M{:02}_S{:02}_i{}_r{rand}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        NAME_COUNTER.fetch_add(1, Ordering::Relaxed) + 1
    )
}

/// `YYYY-MM-DD HH:MM` in UTC, for listings.
pub fn format_utc(secs: i64) -> String {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rest = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The file-name prefix of a leaf type (`SECC_LEAF_`, `CSMS_LEAF_`, …).
/// A -20 SECC leaf is named as a -2 one, as EVerest names it: its key, not
/// its name, makes its type.
pub fn leaf_prefix(leaf: LeafCertificateType) -> &'static str {
    match leaf {
        LeafCertificateType::CSMS => "CSMS_LEAF_",
        LeafCertificateType::V2G | LeafCertificateType::V2G20 => "SECC_LEAF_",
        LeafCertificateType::MF => "MF_LEAF_",
        LeafCertificateType::MO => "MO_LEAF_",
        LeafCertificateType::OEM => "OEM_LEAF_",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_580), (2026, 5, 7));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn suffix_has_everest_shape() {
        let s = random_suffix();
        let parts: Vec<&str> = s.split('_').collect();
        assert_eq!(parts.len(), 8, "{s}");
        assert!(
            parts[0].starts_with('M') && parts[2].starts_with('Y') && parts[6].starts_with('i')
        );
        assert!(parts[7].starts_with('r') && parts[7][1..].parse::<u32>().unwrap() >= 1);
    }
}
