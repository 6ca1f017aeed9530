//! The TOML configuration reader (`--config FILE`, `config.toml` of a resumed run): any text is
//! refused with an error, or a configuration that passes validation writes back to TOML that
//! reads as the same configuration.
#![no_main]

use fedrecon_host_sim::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::from_toml_str(text, "fuzz", None) else {
        return;
    };
    if cfg.validate().is_ok() {
        let again = Config::from_toml_str(&cfg.to_toml_string(), "written", None)
            .expect("a valid configuration's TOML reads back");
        assert_eq!(again, cfg, "TOML round trip");
    }
});
