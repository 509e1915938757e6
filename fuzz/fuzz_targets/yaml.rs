//! The YAML loader and validator: any file gives resources and a list of problems, never a
//! panic (libFuzzer's timeout catches a hang).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (resources, _problems) =
        weft_api::parse_documents(&text, std::path::Path::new("fuzz.yaml"));
    let _ = weft_api::validate(&resources);
});
