//! The validated inputs of an upload: its filename and its declared content type, and
//! the content-type rules `judge` applies to what arrived.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization as _;

use crate::values::InputError;

/// A filename as shown to downloaders: NFC-normalised, the last path segment only,
/// without control or bidirectional-override characters, at most [`Filename::MAX`]
/// characters (the extension kept). Used only for display and `Content-Disposition`,
/// never in a storage path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Filename(String);

/// Characters that reorder text as displayed: `evil\u{202E}gpj.exe` shows as
/// `evilexe.jpg`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

impl Filename {
    pub const MAX: usize = 200;

    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InputError> {
        let normalised: String = raw.nfc().collect();
        // Either separator, whatever the client's platform: `..\..\x` is a path too.
        let last = normalised.rsplit(['/', '\\']).next().unwrap_or_default();
        let cleaned: String = last
            .chars()
            .filter(|c| !c.is_control() && !is_bidi_control(*c))
            .collect();
        let cleaned = cleaned.trim().trim_start_matches('.').trim();
        if cleaned.is_empty() {
            return Err(InputError::new(field, "must name a file"));
        }
        Ok(Self(shorten(cleaned, Self::MAX)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// `name` cut to `max` characters, keeping a short extension.
fn shorten(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        return name.to_owned();
    }
    let extension = name
        .rsplit_once('.')
        .map(|(_, ext)| ext)
        .filter(|ext| !ext.is_empty() && ext.chars().count() <= 16);
    match extension {
        Some(ext) => {
            let keep = max - ext.chars().count() - 1;
            let stem: String = name.chars().take(keep).collect();
            format!("{stem}.{ext}")
        }
        None => name.chars().take(max).collect(),
    }
}

/// A declared media type: `type/subtype`, lowercased, parameters dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContentType(String);

impl ContentType {
    pub const MAX: usize = 127;

    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InputError> {
        let essence = raw.split(';').next().unwrap_or_default().trim();
        let essence = essence.to_ascii_lowercase();
        let token = |part: &str| {
            !part.is_empty()
                && part.len() <= Self::MAX
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
        };
        match essence.split_once('/') {
            Some((kind, subtype)) if token(kind) && token(subtype) => Ok(Self(essence)),
            _ => Err(InputError::new(
                field,
                "must be a media type such as image/png",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Names of one format that clients and sniffers spell differently.
fn canonical(media_type: &str) -> &str {
    match media_type {
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "audio/wav",
        "audio/mp3" | "audio/mpeg3" | "audio/x-mpeg" => "audio/mpeg",
        "audio/x-flac" => "audio/flac",
        "audio/x-m4a" | "audio/mp4a-latm" => "audio/m4a",
        "video/x-m4v" => "video/mp4",
        "application/x-pdf" => "application/pdf",
        "application/x-zip-compressed" => "application/zip",
        other => other,
    }
}

/// Whether a declared type and the type read from the content name the same format.
pub(super) fn same_type(declared: &str, sniffed: &str) -> bool {
    let (declared, sniffed) = (canonical(declared), canonical(sniffed));
    if declared == sniffed {
        return true;
    }
    // One container under several names: an MP4 holding only sound is audio/mp4 to a
    // client and video/mp4 to a sniffer.
    matches!(
        (declared, sniffed),
        (
            "audio/mp4" | "audio/m4a",
            "video/mp4" | "audio/m4a" | "audio/mp4"
        ) | ("video/quicktime", "video/mp4")
            | (
                "audio/ogg" | "video/ogg",
                "audio/ogg" | "video/ogg" | "audio/opus"
            )
            | ("audio/webm", "video/webm")
            // WebM is Matroska with fewer codecs, and the sniffer takes any Matroska file
            // whose header is not laid out exactly as it expects for WebM.
            | ("video/x-matroska" | "audio/x-matroska", "video/webm" | "video/x-matroska")
    )
}

/// Declared types whose content always starts with a recognisable signature: a
/// declaration of one of these with content that has none is a lie. SVG is text.
pub(super) fn is_binary_type(declared: &str) -> bool {
    let declared = canonical(declared);
    (declared.starts_with("image/") && declared != "image/svg+xml")
        || declared.starts_with("audio/")
        || declared.starts_with("video/")
        || declared == "application/pdf"
}

/// Types a sniffer finds by guessing at text.
pub(super) fn is_text_type(sniffed: &str) -> bool {
    sniffed.starts_with("text/") || sniffed == "application/xml"
}

/// A declared type that says nothing about the content. What is declared so is served
/// as a download whatever it turns out to be, so finding a known format in it is no lie.
pub(super) fn is_unspecified_type(declared: &str) -> bool {
    declared == "application/octet-stream"
}

/// What `infer` calls a certificate: a PEM header, or the first two bytes of any DER
/// structure. It files them with programs; they are not, and they are served as
/// downloads under any type that is not itself a binary format.
pub(super) fn is_certificate_type(sniffed: &str) -> bool {
    sniffed == "application/x-x509-ca-cert"
}

/// Extensions under which a desktop runs, installs or interprets a file when it is
/// opened, whatever the file's content. HTML and SVG are absent on purpose: they are
/// served only as downloads, and run nothing outside a browser on this origin.
/// `bin` is absent too: it is the generic name for data, not a program format.
const PROGRAM_EXTENSIONS: &[&str] = &[
    "exe", "dll", "com", "scr", "pif", "msi", "msp", "msc", "bat", "cmd", "ps1", "psm1", "vbs",
    "vbe", "js", "jse", "mjs", "wsf", "wsh", "hta", "cpl", "jar", "jnlp", "apk", "app", "appx",
    "msix", "appimage", "dmg", "pkg", "deb", "rpm", "sh", "bash", "zsh", "csh", "ksh", "command",
    "desktop", "lnk", "reg", "elf", "run", "py", "pl", "rb", "php",
];

/// Whether a filename's last extension names a program or a script.
pub(super) fn is_program_name(filename: &str) -> bool {
    // Windows drops trailing dots and spaces when it saves a file: `setup.exe. ` is
    // `setup.exe` once downloaded.
    let name = filename.trim_end_matches(['.', ' ']);
    name.rsplit_once('.').is_some_and(|(_, extension)| {
        PROGRAM_EXTENSIONS
            .iter()
            .any(|program| extension.eq_ignore_ascii_case(program))
    })
}

/// Types read from the content that are installers or packages of code: `infer` names
/// an OLE compound file that is no Office document after MSI, its commonest kind.
/// A JAR or an APK reads as a ZIP, and runs only under its own extension, which
/// [`is_program_name`] refuses.
pub(super) fn is_program_sniffed(sniffed: &str) -> bool {
    matches!(
        sniffed,
        "application/x-ole-storage"
            | "application/vnd.debian.binary-package"
            | "application/x-rpm"
            | "application/x-google-chrome-extension"
    )
}

/// Declared types that are programs or scripts a desktop would run when opened.
pub(super) fn is_program_type(declared: &str) -> bool {
    is_program_sniffed(declared)
        || matches!(
            declared,
            "application/x-msdownload"
                | "application/x-msdos-program"
                | "application/x-executable"
                | "application/x-elf"
                | "application/x-mach-binary"
                | "application/x-sharedlib"
                | "application/vnd.microsoft.portable-executable"
                | "application/x-dosexec"
                | "application/x-sh"
                | "application/x-shellscript"
                | "application/x-csh"
                | "application/x-bat"
                | "application/x-msi"
                | "application/x-ms-installer"
                | "application/vnd.apple.installer+xml"
                | "application/java-archive"
                | "application/x-java-archive"
                | "application/javascript"
                | "application/x-javascript"
                | "text/javascript"
                | "application/x-powershell"
                | "text/x-shellscript"
                | "text/x-python"
                | "application/x-python-code"
                | "application/hta"
                | "application/x-ms-shortcut"
                | "application/x-ms-application"
                | "application/vnd.android.package-archive"
                | "application/x-apple-diskimage"
                | "application/x-debian-package"
                | "application/x-redhat-package-manager"
                | "application/x-perl"
                | "text/x-perl"
                | "application/x-ruby"
                | "text/x-ruby"
                | "application/x-php"
                | "application/x-httpd-php"
                | "text/x-php"
                | "application/x-python"
                | "text/vbscript"
                | "application/x-vbscript"
                | "application/x-java-jnlp-file"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_keep_only_their_last_path_segment() {
        for raw in ["../../etc/passwd", "..\\..\\etc\\passwd", "/etc/passwd"] {
            assert_eq!(
                Filename::parse(raw, "filename").map(|f| f.0),
                Ok("passwd".to_owned()),
                "{raw}"
            );
        }
    }

    #[test]
    fn filenames_lose_control_and_reordering_characters_and_are_nfc() {
        assert_eq!(
            Filename::parse("evil\u{202E}gpj.exe\u{0}", "filename").map(|f| f.0),
            Ok("evilgpj.exe".to_owned())
        );
        assert_eq!(
            Filename::parse("Cafe\u{301}.txt", "filename").map(|f| f.0),
            Ok("Caf\u{e9}.txt".to_owned())
        );
    }

    #[test]
    fn filenames_that_name_nothing_are_refused() {
        for raw in ["", "  ", "..", "dir/", "\u{202E}", "../.."] {
            assert!(Filename::parse(raw, "filename").is_err(), "{raw:?}");
        }
    }

    #[test]
    fn long_filenames_are_cut_keeping_their_extension() {
        let name = Filename::parse(&format!("{}.png", "a".repeat(500)), "filename").map(|f| f.0);
        let name = name.unwrap_or_default();
        assert_eq!(name.chars().count(), Filename::MAX);
        assert!(name.ends_with(".png"));
    }

    #[test]
    fn content_types_are_lowercased_without_parameters() {
        assert_eq!(
            ContentType::parse("Text/Plain; charset=utf-8", "contentType").map(|c| c.0),
            Ok("text/plain".to_owned())
        );
        for bad in ["", "png", "image/", "/png", "image/png/x", "image/p ng"] {
            assert!(ContentType::parse(bad, "contentType").is_err(), "{bad}");
        }
    }

    #[test]
    fn spellings_of_one_format_match() {
        assert!(same_type("image/jpg", "image/jpeg"));
        assert!(same_type("audio/mp4", "video/mp4"));
        assert!(same_type("video/x-matroska", "video/webm"));
        assert!(!same_type("video/x-matroska", "video/mp4"));
        assert!(!same_type("image/png", "application/x-executable"));
        assert!(is_binary_type("image/png"));
        assert!(!is_binary_type("image/svg+xml"));
    }

    #[test]
    fn program_names_are_known_by_their_last_extension_in_any_case() {
        for name in [
            "setup.exe",
            "SETUP.EXE",
            "invoice.pdf.exe",
            "run.Sh",
            "tool.ps1",
            "app.jar",
            "game.apk",
            "x.msi",
            "x.lnk",
            "x.py",
            "x.mjs",
            "setup.exe.",
            "setup.exe . ",
        ] {
            assert!(is_program_name(name), "{name}");
        }
        for name in [
            "page.html",
            "page.htm",
            "page.xhtml",
            "pic.svg",
            "pic.svgz",
            "big.bin",
            "cat.png",
            "exe",
            "notes.txt",
            "setup.exe.txt",
            "archive.tar.gz",
            "README",
        ] {
            assert!(!is_program_name(name), "{name}");
        }
    }

    #[test]
    fn installers_found_in_the_content_are_programs() {
        assert!(is_program_sniffed("application/x-ole-storage"));
        assert!(is_program_sniffed("application/x-rpm"));
        assert!(!is_program_sniffed("application/zip"));
        assert!(!is_program_sniffed("application/msword"));
        assert!(is_program_type("application/vnd.debian.binary-package"));
        assert!(is_program_type("application/x-sh"));
        assert!(!is_program_type("application/zip"));
    }
}
