// The bodies of the node crate's fuzz targets, shared by the cargo-fuzz targets in
// `node/fuzz/fuzz_targets/` and the replay test `node/tests/fuzz_replay.rs` (both `include!`
// this file). They use only the public API of `throughgate-node` and `throughgate-protocol`.
// Every target takes arbitrary bytes and must return without panicking; where the input is
// accepted it also checks what the parser promises (exported records import back identically,
// a parsed config re-serialises to the same config, a policy never releases `risk` for
// resettlement outside justice).

use throughgate_node::config::NodeConfig;
use throughgate_node::import::{export, import, ImportFormat, ImportLimits};
use throughgate_node::policy::Policy;
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::identifiers::{IdScheme, SubjectIdentifier};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::manifest::{Member, MemberRole, Sector};

/// The scheme and limits a records file is imported with, from the input's first byte: the
/// low bits pick the scheme, the top bit tight limits (so the limit paths are reached too).
fn import_settings(ctl: u8) -> (IdScheme, ImportLimits) {
    let scheme = IdScheme::ALL
        .get(usize::from(ctl & 0x7f) % IdScheme::ALL.len())
        .copied()
        .unwrap_or(IdScheme::NhsNumber);
    let limits = if ctl & 0x80 != 0 {
        ImportLimits {
            max_bytes: 4096,
            max_rows: 4,
            max_line_len: 256,
        }
    } else {
        ImportLimits {
            max_bytes: 1 << 20,
            max_rows: 100_000,
            ..ImportLimits::default()
        }
    };
    (scheme, limits)
}

fn import_target(data: &[u8], format: ImportFormat) {
    let Some((&ctl, file)) = data.split_first() else {
        return;
    };
    let (scheme, limits) = import_settings(ctl);
    match import(file, format, scheme, &limits) {
        Ok(records) => {
            assert!(records.len() <= limits.max_rows, "more rows than the limit");
            for r in &records {
                assert!(r.validate().is_ok(), "imported an invalid record");
                let id = SubjectIdentifier {
                    scheme,
                    value: r.subject.clone(),
                };
                assert!(id.validate().is_ok(), "imported an unnormalised subject");
            }
            // Import is the inverse of export, in both formats.
            for out_format in [ImportFormat::Csv, ImportFormat::Json] {
                let mut bytes = Vec::new();
                if let Err(e) = export(&records, out_format, &mut bytes) {
                    panic!("imported records do not export: {e}");
                }
                let unlimited = ImportLimits {
                    max_bytes: usize::MAX,
                    max_rows: usize::MAX,
                    ..ImportLimits::default()
                };
                match import(&bytes, out_format, scheme, &unlimited) {
                    Ok(again) => assert_eq!(again, records, "export then import changed records"),
                    Err(e) => panic!(
                        "exported records ({out_format:?}) do not import: {:?}",
                        e.rows()
                    ),
                }
            }
        }
        Err(e) => {
            // Reasons never quote cells; at least, every problem has a line or is file-level.
            let _ = e.rows();
            let _ = e.lines();
            let _ = e.to_string();
        }
    }
}

/// CSV records import (`node::import::import`).
pub fn import_csv(data: &[u8]) {
    import_target(data, ImportFormat::Csv);
}

/// JSON Lines records import (`node::import::import`).
pub fn import_jsonl(data: &[u8]) {
    import_target(data, ImportFormat::Json);
}

/// Node configuration TOML (`NodeConfig::parse`, then its range checks). A parsed config
/// re-serialises to text that parses back to the same config.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = NodeConfig::parse(text) else {
        return;
    };
    let _ = cfg.check();
    let again = cfg.to_toml();
    match NodeConfig::parse(&again) {
        Ok(back) => assert_eq!(back, cfg, "config does not round-trip through to_toml"),
        Err(e) => panic!("to_toml output does not parse: {e}\n{again}"),
    }
}

fn member(id: &str, sector: Sector, seed: u8) -> Option<Member> {
    Some(Member {
        id: AgencyId::new(id).ok()?,
        name: id.to_owned(),
        sector,
        addresses: vec!["127.0.0.1:1".into()],
        node_keys: vec![SecretKey::from_seed(&[seed; 32]).public()],
        categories: Vec::new(),
        id_scheme: IdScheme::CouncilRef,
        roles: vec![MemberRole::Requester],
        retired_keys: vec![],
    })
}

/// Minimisation policy TOML (`Policy::parse`). An accepted policy never releases `risk` for
/// `resettlement` to a requester outside the justice sector, whatever its rules say.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = Policy::parse(text) else {
        return;
    };
    let requesters = [
        member("hmp-leeds", Sector::Justice, 1),
        member("probation-yorks", Sector::Justice, 2),
        member("nhs-wy", Sector::Health, 3),
        member("dwp", Sector::Welfare, 4),
        member("leeds-college", Sector::Education, 5),
        member("leeds-cc", Sector::LocalGovernment, 6),
    ];
    for m in requesters.iter().flatten() {
        for purpose in [
            Purpose::Resettlement,
            Purpose::ContinuityOfCare,
            Purpose::PublicProtection,
            Purpose::Safeguarding,
        ] {
            let r = p.release_for(purpose, m);
            if purpose == Purpose::Resettlement && m.sector != Sector::Justice {
                assert!(
                    !r.categories.contains(&Category::Risk),
                    "risk released for resettlement to {}",
                    m.id
                );
            }
        }
    }
}

/// A target: its name (the cargo-fuzz target and corpus folder name) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("import_csv", import_csv),
    ("import_jsonl", import_jsonl),
    ("config", config),
    ("policy", policy),
];
