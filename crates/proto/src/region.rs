//! Genesys Cloud regions and their hosts (reference §1.3).
//!
//! A region is accepted as a key (`eu-west-1`, `eu_west_1`), a domain (`mypurecloud.ie`) or
//! a URL (`https://api.mypurecloud.ie/`, `login.`/`streaming.` hosts too). Hosts that are
//! not Genesys Cloud hosts, such as the often-quoted `api.eu.mypurecloud.com`, are rejected
//! with the closest real region.

use std::fmt;

use crate::suggest::levenshtein;

/// One Genesys Cloud region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    /// The SDK key with dashes, e.g. `eu-west-1`.
    pub key: &'static str,
    /// The domain behind `api.`, `login.` and `streaming.`.
    pub domain: &'static str,
    /// Where it is.
    pub location: &'static str,
    hints: &'static [&'static str],
}

macro_rules! region {
    ($key:literal, $domain:literal, $location:literal, [$($hint:literal),*]) => {
        Region { key: $key, domain: $domain, location: $location, hints: &[$($hint),*] }
    };
}

/// All regions, in the order of the SDK region tables.
pub const REGIONS: [Region; 18] = [
    region!(
        "us-east-1",
        "mypurecloud.com",
        "US East (Virginia)",
        ["us", "usa", "virginia", "east"]
    ),
    region!(
        "us-east-2",
        "use2.us-gov-pure.cloud",
        "US East (FedRAMP)",
        ["gov", "fedramp", "usgov"]
    ),
    region!(
        "us-west-2",
        "usw2.pure.cloud",
        "US West (Oregon)",
        ["west", "oregon", "uswest"]
    ),
    region!(
        "ca-central-1",
        "cac1.pure.cloud",
        "Canada (Central)",
        ["ca", "canada"]
    ),
    region!(
        "sa-east-1",
        "sae1.pure.cloud",
        "South America (São Paulo)",
        ["br", "brazil", "sa", "saopaulo"]
    ),
    region!(
        "mx-central-1",
        "mxc1.pure.cloud",
        "Mexico (Central)",
        ["mx", "mexico"]
    ),
    region!(
        "eu-west-1",
        "mypurecloud.ie",
        "EU (Ireland)",
        ["eu", "europe", "ie", "ireland", "dublin"]
    ),
    region!(
        "eu-west-2",
        "euw2.pure.cloud",
        "EU (London)",
        ["uk", "gb", "london", "england"]
    ),
    region!(
        "eu-central-1",
        "mypurecloud.de",
        "EU (Frankfurt)",
        ["de", "germany", "frankfurt"]
    ),
    region!(
        "eu-central-2",
        "euc2.pure.cloud",
        "EU (Zurich)",
        ["ch", "zurich", "switzerland"]
    ),
    region!(
        "eusc-de-east-1",
        "edee1.eusc-pure.cloud",
        "EU Sovereign Cloud (Germany)",
        ["eusc", "sovereign"]
    ),
    region!(
        "me-central-1",
        "mec1.pure.cloud",
        "Middle East (UAE)",
        ["me", "uae", "dubai"]
    ),
    region!(
        "ap-south-1",
        "aps1.pure.cloud",
        "Asia Pacific (Mumbai)",
        ["in", "india", "mumbai"]
    ),
    region!(
        "ap-southeast-1",
        "apse1.pure.cloud",
        "Asia Pacific (Singapore)",
        ["sg", "singapore"]
    ),
    region!(
        "ap-southeast-2",
        "mypurecloud.com.au",
        "Asia Pacific (Sydney)",
        ["au", "australia", "sydney"]
    ),
    region!(
        "ap-northeast-1",
        "mypurecloud.jp",
        "Asia Pacific (Tokyo)",
        ["jp", "japan", "tokyo"]
    ),
    region!(
        "ap-northeast-2",
        "apne2.pure.cloud",
        "Asia Pacific (Seoul)",
        ["kr", "korea", "seoul"]
    ),
    region!(
        "ap-northeast-3",
        "apne3.pure.cloud",
        "Asia Pacific (Osaka)",
        ["osaka"]
    ),
];

impl Region {
    /// Parses a region key, domain or URL.
    pub fn parse(input: &str) -> Result<Region, RegionError> {
        let lowered = input.trim().to_ascii_lowercase();
        if lowered.is_empty() {
            return Err(RegionError::Empty);
        }
        let key = lowered.replace('_', "-");
        if let Some(region) = REGIONS.iter().find(|r| r.key == key) {
            return Ok(*region);
        }
        let host = host_of(&lowered);
        let domain = ["api.", "login.", "streaming.", "apps."]
            .iter()
            .find_map(|p| host.strip_prefix(p))
            .unwrap_or(host);
        if let Some(region) = REGIONS.iter().find(|r| r.domain == domain) {
            return Ok(*region);
        }
        Err(RegionError::Unknown {
            given: input.trim().to_owned(),
            suggestions: suggest(host),
        })
    }

    /// `https://api.{domain}`: the REST API base.
    pub fn api_base(&self) -> String {
        format!("https://api.{}", self.domain)
    }

    /// `https://login.{domain}`: where tokens come from.
    pub fn login_base(&self) -> String {
        format!("https://login.{}", self.domain)
    }

    /// `streaming.{domain}`: the host `connectUri`s point at today. Never build a socket
    /// URL from it; use the `connectUri` the API returns.
    pub fn streaming_host(&self) -> String {
        format!("streaming.{}", self.domain)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (api.{}, {})", self.key, self.domain, self.location)
    }
}

/// Strips scheme, credentials, path, query and port from a URL-ish input.
fn host_of(input: &str) -> &str {
    let rest = input.split_once("://").map_or(input, |(_, rest)| rest);
    let rest = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = rest.split(':').next().unwrap_or(rest);
    rest.trim_end_matches('.')
}

/// Regions close to an unknown host: those named by a word in it, else the nearest domain.
fn suggest(host: &str) -> Vec<Region> {
    let words: Vec<&str> = host
        .split(['.', '-', '_'])
        .filter(|w| !w.is_empty())
        .collect();
    let mut picks: Vec<Region> = Vec::new();
    for word in &words {
        for region in REGIONS.iter().filter(|r| r.hints.contains(word)) {
            if !picks.contains(region) {
                picks.push(*region);
            }
        }
    }
    if picks.is_empty() {
        let domain = ["api.", "login.", "streaming."]
            .iter()
            .find_map(|p| host.strip_prefix(p))
            .unwrap_or(host);
        let best = REGIONS.iter().min_by_key(|r| levenshtein(domain, r.domain));
        picks.extend(best.copied());
    }
    picks.truncate(3);
    picks
}

/// Why a region could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    /// Nothing given.
    #[error(
        "no region given; set GENESYSCLOUD_REGION or --region to a region such as eu-west-1 or a domain such as mypurecloud.ie"
    )]
    Empty,
    /// Not a Genesys Cloud region, domain or host.
    #[error("{given:?} is not a Genesys Cloud region or host{}", closest(.suggestions))]
    Unknown {
        /// The input as given.
        given: String,
        /// The closest real regions, best first.
        suggestions: Vec<Region>,
    },
}

fn closest(suggestions: &[Region]) -> String {
    let names: Vec<String> = suggestions.iter().map(Region::to_string).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => format!("; the closest real region is {one}"),
        many => format!("; the closest real regions are {}", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(input: &str) -> &'static str {
        Region::parse(input)
            .unwrap_or_else(|e| panic!("{input}: {e}"))
            .key
    }

    #[test]
    fn keys_domains_and_urls_all_resolve() {
        assert_eq!(key("eu-west-1"), "eu-west-1");
        assert_eq!(key("eu_west_1"), "eu-west-1");
        assert_eq!(key("EU_WEST_1"), "eu-west-1");
        assert_eq!(key("mypurecloud.ie"), "eu-west-1");
        assert_eq!(key("https://api.mypurecloud.ie/"), "eu-west-1");
        assert_eq!(key("https://login.mypurecloud.de"), "eu-central-1");
        assert_eq!(
            key("wss://streaming.mypurecloud.com/channels/x"),
            "us-east-1"
        );
        assert_eq!(key("api.mypurecloud.com.au:443"), "ap-southeast-2");
        assert_eq!(key("apne3.pure.cloud"), "ap-northeast-3");
        assert_eq!(key("eusc_de_east_1"), "eusc-de-east-1");
    }

    #[test]
    fn every_region_resolves_from_each_of_its_hosts() {
        for region in REGIONS {
            assert_eq!(Region::parse(region.key), Ok(region));
            assert_eq!(Region::parse(&region.key.replace('-', "_")), Ok(region));
            assert_eq!(Region::parse(&region.api_base()), Ok(region));
            assert_eq!(Region::parse(&region.login_base()), Ok(region));
            assert_eq!(Region::parse(&region.streaming_host()), Ok(region));
        }
    }

    #[test]
    fn made_up_eu_host_is_rejected_with_real_eu_regions() {
        let err = Region::parse("api.eu.mypurecloud.com").unwrap_err();
        let RegionError::Unknown { suggestions, .. } = &err else {
            panic!()
        };
        assert_eq!(suggestions[0].key, "eu-west-1");
        let text = err.to_string();
        assert!(text.contains("api.mypurecloud.ie"), "{text}");
    }

    #[test]
    fn made_up_hosts_get_a_nearest_region() {
        for fake in [
            "api.us.genesyscloud.com",
            "platformapi.mypurecloud.com",
            "mypurecloud.co",
        ] {
            let err = Region::parse(fake).unwrap_err();
            let RegionError::Unknown { suggestions, .. } = err else {
                panic!()
            };
            assert!(!suggestions.is_empty(), "{fake}");
        }
        let RegionError::Unknown { suggestions, .. } =
            Region::parse("api.mypurecloud.co.jp").unwrap_err()
        else {
            panic!()
        };
        assert_eq!(suggestions[0].key, "ap-northeast-1");
        assert_eq!(Region::parse("  "), Err(RegionError::Empty));
    }
}
