//! Resident identity card numbers per GB 11643-1999: 6-digit region, 8-digit birth date,
//! 3-digit sequence, 1 check character (ISO 7064 MOD 11-2).

use chrono::{Datelike, NaiveDate};

use crate::message::Msg;

/// Weights of the first 17 characters for the check character.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character for each remainder mod 11.
const CHECK_CHARS: &[u8; 11] = b"10X98765432";
/// Province-level prefixes of GB/T 2260 in use for resident ID numbers.
const PROVINCES: [u8; 34] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
];

/// The check character GB 11643 gives for the first 17 digits.
pub fn check_char(first17: &[u8]) -> Option<u8> {
    if first17.len() != 17 || !first17.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    Some(CHECK_CHARS[(sum % 11) as usize])
}

/// Checks an ID number and returns it normalised (trimmed, lower-case `x` made upper-case).
/// `today` bounds the birth date.
pub fn validate(raw: &str, today: NaiveDate) -> Result<String, Msg> {
    let id = raw.trim().to_ascii_uppercase();
    if id.chars().count() != 18 {
        return Err(Msg::new(
            "身份证号码应为18位",
            "ID number must be 18 characters",
        ));
    }
    let bytes = id.as_bytes();
    if !bytes[..17].iter().all(u8::is_ascii_digit)
        || !(bytes[17].is_ascii_digit() || bytes[17] == b'X')
    {
        return Err(Msg::new(
            "身份证号码前17位应为数字，最后一位为数字或X",
            "ID number must be 17 digits followed by a digit or X",
        ));
    }
    let province = (bytes[0] - b'0') * 10 + (bytes[1] - b'0');
    if !PROVINCES.contains(&province) {
        return Err(Msg::new(
            "身份证号码的地区码无效",
            "ID number has an unknown region code",
        ));
    }
    let birth = NaiveDate::parse_from_str(&id[6..14], "%Y%m%d").map_err(|_| {
        Msg::new(
            "身份证号码中的出生日期无效",
            "ID number has an invalid birth date",
        )
    })?;
    if birth > today || birth.year() < 1890 {
        return Err(Msg::new(
            "身份证号码中的出生日期不合理",
            "ID number has a birth date that is out of range",
        ));
    }
    if check_char(&bytes[..17]) != Some(bytes[17]) {
        return Err(Msg::new(
            "身份证号码校验位不正确，请核对",
            "ID number check digit is wrong",
        ));
    }
    Ok(id)
}

/// Masks an ID number for lists and logs: first 4 and last 4 kept (`4301**********1234`).
pub fn mask(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 8))
}

/// The last four characters, the search key clerks use.
pub fn tail4(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()
    }

    #[test]
    fn accepts_a_valid_number_and_normalises_lower_x() {
        // Sample number from GB 11643's own example, check character X.
        assert_eq!(
            validate("11010519491231002x", today()).unwrap(),
            "11010519491231002X"
        );
        assert_eq!(check_ok("43018119520315001"), Ok(()));
    }

    fn check_ok(first17: &str) -> Result<(), Msg> {
        let c = check_char(first17.as_bytes()).unwrap() as char;
        let id = format!("{first17}{c}");
        validate(&id, today()).map(|_| ())
    }

    #[test]
    fn wrong_check_digit_is_named() {
        let err = validate("110105194912310021", today()).unwrap_err();
        assert!(err.zh.contains("校验位"), "{err:?}");
    }

    #[test]
    fn impossible_birth_dates_are_refused() {
        for first17 in [
            "11010519490231002",
            "11010520991231002",
            "11010518001231002",
        ] {
            let c = check_char(first17.as_bytes()).unwrap() as char;
            assert!(
                validate(&format!("{first17}{c}"), today()).is_err(),
                "{first17}"
            );
        }
    }

    #[test]
    fn wrong_length_region_and_characters_are_refused() {
        assert!(validate("1101051949123100", today()).is_err());
        assert!(validate("99010519491231002X", today()).is_err());
        assert!(validate("1101051949123100AX", today()).is_err());
        assert!(validate("１１０１０５１９４９１２３１００２X", today()).is_err());
    }

    #[test]
    fn mask_keeps_four_and_four() {
        assert_eq!(mask("430181195203150012"), "4301**********0012");
        assert_eq!(tail4("11010519491231002X"), "002X");
    }
}
