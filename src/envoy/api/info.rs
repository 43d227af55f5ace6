//! The Envoy's `/info` document (XML, no authentication): serial, firmware, part number,
//! whether it is metered and whether it wants tokens.
//!
//! Pure parsing: a handful of tags are read with a tiny extractor rather than an XML library.

/// What `/info` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub serial: String,
    /// `D7.6.175`, as the Envoy writes it.
    pub firmware: String,
    pub part_number: String,
    /// Metered (CTs can be installed) per `<imeter>`.
    pub metered: bool,
    /// Firmware 7 and later want a JWT (`<web-tokens>true</web-tokens>`).
    pub web_tokens: bool,
}

impl Info {
    /// The firmware's major version (`D7.6.175` is 7), 0 when unreadable.
    pub fn major(&self) -> u32 {
        self.firmware
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }

    /// The Envoy model, from the part number's family.
    pub fn model(&self) -> &'static str {
        match (self.metered, self.major()) {
            (true, 8..) => "IQ Gateway (metered)",
            (false, 8..) => "IQ Gateway",
            (true, _) => "Envoy S Metered",
            (false, _) => "Envoy",
        }
    }
}

/// The text of the first `<tag>...</tag>` in `xml`, trimmed.
fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml[start..end].trim())
}

/// Parses `/info`. The serial is required; the rest has safe defaults.
pub fn parse(xml: &str) -> Result<Info, String> {
    let device = tag(xml, "device").ok_or("/info has no <device> element")?;
    let serial = tag(device, "sn")
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
        .ok_or("/info has no usable <sn> serial number")?;
    Ok(Info {
        serial: serial.to_string(),
        firmware: tag(device, "software").unwrap_or("unknown").to_string(),
        part_number: tag(device, "pn").unwrap_or("").to_string(),
        metered: tag(device, "imeter") == Some("true"),
        web_tokens: tag(xml, "web-tokens") == Some("true"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info() {
        let xml = "<?xml version='1.0'?><envoy_info><device><sn>122238082763</sn><pn>800-00654-r08</pn>\
                   <software>D7.6.175</software><imeter>true</imeter></device>\
                   <web-tokens>true</web-tokens><package name='x'><pn>500</pn></package></envoy_info>";
        let info = parse(xml).unwrap();
        assert_eq!(info.serial, "122238082763");
        assert_eq!(info.firmware, "D7.6.175");
        assert_eq!(info.part_number, "800-00654-r08");
        assert!(info.metered && info.web_tokens);
        assert_eq!(info.major(), 7);
        assert_eq!(info.model(), "Envoy S Metered");
    }

    #[test]
    fn legacy_and_broken() {
        let old = parse("<envoy_info><device><sn>121426016034</sn><software>R3.9.36</software></device></envoy_info>")
            .unwrap();
        assert_eq!(
            (old.major(), old.metered, old.web_tokens),
            (3, false, false)
        );
        let cases = [
            "",
            "<html>404</html>",
            "<envoy_info><device></device></envoy_info>",
            "<device><sn>12 34</sn></device>",
        ];
        for xml in cases {
            assert!(parse(xml).is_err(), "{xml}");
        }
    }
}
