//! Kubernetes-style resource quantities (`500m`, `2`, `1.5`, `512Mi`,
//! `4Gi`, `1G`), summed into the CPU and memory a workload is allocated.

/// Binary and decimal suffixes with their multipliers. `m` is milli.
const SUFFIXES: [(&str, f64); 13] = [
    ("Ki", 1024.0),
    ("Mi", 1024.0 * 1024.0),
    ("Gi", 1024.0 * 1024.0 * 1024.0),
    ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("m", 0.001),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
];

/// Parses `text` into base units (cores or bytes). `None` for text that
/// is not a non-negative decimal number with an optional suffix.
pub(crate) fn parse(text: &str) -> Option<f64> {
    let (number, multiplier) = SUFFIXES
        .iter()
        .find_map(|(suffix, multiplier)| {
            text.strip_suffix(suffix)
                .map(|number| (number, *multiplier))
        })
        .unwrap_or((text, 1.0));
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|fraction| !all_digits(fraction)) {
        return None;
    }
    number.parse::<f64>().ok().map(|value| value * multiplier)
}

/// Adds up CPU requests in millicores and memory requests in bytes.
#[derive(Debug, Default)]
pub(crate) struct Allocation {
    cpu_millicores: f64,
    ram_bytes: f64,
}

impl Allocation {
    /// Adds one container's requests. `owner` names the container's
    /// configuration in errors, such as `agent <id> resources`.
    pub(crate) fn add(&mut self, owner: &str, cpu: &str, memory: &str) -> Result<(), String> {
        if !cpu.is_empty() {
            let cores = parse(cpu).ok_or_else(|| invalid(owner, "requests_cpu", cpu))?;
            self.cpu_millicores += (cores * 1000.0).ceil();
        }
        if !memory.is_empty() {
            let bytes = parse(memory).ok_or_else(|| invalid(owner, "requests_memory", memory))?;
            self.ram_bytes += bytes.ceil();
        }
        Ok(())
    }

    /// Returns the totals, or an error when one exceeds what a workload
    /// record stores (32-bit millicores, 64-bit bytes).
    pub(crate) fn totals(&self) -> Result<(i32, i64), String> {
        if self.cpu_millicores > f64::from(i32::MAX) {
            return Err(format!(
                "the containers request {} millicores of CPU in total, more than a workload can be given",
                self.cpu_millicores
            ));
        }
        if self.ram_bytes >= i64::MAX as f64 {
            return Err(format!(
                "the containers request {} bytes of memory in total, more than a workload can be given",
                self.ram_bytes
            ));
        }
        Ok((self.cpu_millicores as i32, self.ram_bytes as i64))
    }
}

fn invalid(owner: &str, field: &str, value: &str) -> String {
    format!("{owner}.{field}: {value:?} is not a quantity such as 500m, 2, 512Mi or 4Gi")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_with_suffixes() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1.5"), Some(1.5));
        assert_eq!(parse("512Mi"), Some(536_870_912.0));
        assert_eq!(parse("1G"), Some(1e9));
        for bad in ["", "m", "1.", ".5", "-1", "1x", "1.2.3", "Gi"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn allocation_sums_requests() {
        let mut allocation = Allocation::default();
        allocation.add("agent", "500m", "512Mi").unwrap();
        allocation.add("mcp", "1", "").unwrap();
        allocation.add("hook", "", "").unwrap();
        assert_eq!(allocation.totals().unwrap(), (1500, 536_870_912));
        let error = allocation.add("agent", "lots", "").unwrap_err();
        assert!(error.contains("agent.requests_cpu"), "{error}");
    }
}
