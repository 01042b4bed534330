//! Masking of personal identifiers before they reach logs or error text.

/// Masks an openid for logs: the first 4 and last 2 characters around `***`
/// (`oUpF***6o`). Identifiers of 8 characters or fewer are masked entirely,
/// so a short value never leaks most of itself.
pub fn mask_openid(openid: &str) -> String {
    let chars: Vec<char> = openid.chars().collect();
    if chars.len() <= 8 {
        return "***".to_string();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}***{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openids_are_masked() {
        assert_eq!(mask_openid("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"), "oUpF***6o");
        assert_eq!(mask_openid("short"), "***");
        assert_eq!(mask_openid(""), "***");
        assert_eq!(mask_openid("12345678"), "***");
        assert_eq!(mask_openid("123456789"), "1234***89");
    }
}
