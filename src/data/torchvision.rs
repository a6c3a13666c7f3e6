//! torchvision's ImageNet weights for its ResNets, by the names torchvision gives them
//! (`ResNet50_Weights.IMAGENET1K_V2`, `DEFAULT`): where they are downloaded from, the SHA-256
//! prefix their file name carries, how torchvision evaluates them, and where torchvision keeps
//! them once downloaded (torch.hub's cache), so a PyTorch user's copy is used as it is.

use std::path::PathBuf;

use super::fetch::Digest;
use crate::{Error, Result};

/// One set of torchvision's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TorchvisionWeights {
    /// resnet18 ... resnet152, wide_resnet50_2, wide_resnet101_2, the ResNeXts.
    pub model: &'static str,
    /// `IMAGENET1K_V1` or `IMAGENET1K_V2`.
    pub name: &'static str,
    /// The file on download.pytorch.org: `resnet50-11ad3fa6.pth`, the hex digits being the start
    /// of its SHA-256.
    pub file: &'static str,
    /// The shorter side's size before the centre crop of 224 in torchvision's evaluation
    /// transforms (`weights.transforms()`): 256 for V1, 232 for V2.
    pub eval_resize: usize,
}

const fn weights(model: &'static str, v2: bool, file: &'static str) -> TorchvisionWeights {
    TorchvisionWeights {
        model,
        name: if v2 { "IMAGENET1K_V2" } else { "IMAGENET1K_V1" },
        file,
        eval_resize: if v2 { 232 } else { 256 },
    }
}

/// torchvision.models' `ResNet18_Weights` ... `ResNet152_Weights`, `Wide_ResNet50_2_Weights`,
/// `Wide_ResNet101_2_Weights` and the ResNeXts'. A model's last is its `DEFAULT`, as in
/// torchvision.
const TORCHVISION_WEIGHTS: [TorchvisionWeights; 17] = [
    weights("resnet18", false, "resnet18-f37072fd.pth"),
    weights("resnet34", false, "resnet34-b627a593.pth"),
    weights("resnet50", false, "resnet50-0676ba61.pth"),
    weights("resnet50", true, "resnet50-11ad3fa6.pth"),
    weights("resnet101", false, "resnet101-63fe2227.pth"),
    weights("resnet101", true, "resnet101-cd907fc2.pth"),
    weights("resnet152", false, "resnet152-394f9c45.pth"),
    weights("resnet152", true, "resnet152-f82ba261.pth"),
    weights("wide_resnet50_2", false, "wide_resnet50_2-95faca4d.pth"),
    weights("wide_resnet50_2", true, "wide_resnet50_2-9ba9bcbe.pth"),
    weights("wide_resnet101_2", false, "wide_resnet101_2-32ee1156.pth"),
    weights("wide_resnet101_2", true, "wide_resnet101_2-d733dc28.pth"),
    weights("resnext50_32x4d", false, "resnext50_32x4d-7cdf4587.pth"),
    weights("resnext50_32x4d", true, "resnext50_32x4d-1a0047aa.pth"),
    weights("resnext101_32x8d", false, "resnext101_32x8d-8ba56ff5.pth"),
    weights("resnext101_32x8d", true, "resnext101_32x8d-110c445d.pth"),
    // its only weights, trained with the V2 recipe and evaluated as the V2s are
    TorchvisionWeights {
        eval_resize: 232,
        ..weights("resnext101_64x4d", false, "resnext101_64x4d-173b62eb.pth")
    },
];

impl TorchvisionWeights {
    /// Where torchvision downloads them from.
    pub fn url(&self) -> String {
        format!("https://download.pytorch.org/models/{}", self.file)
    }

    /// The SHA-256 prefix of the file's name, which torchvision checks after a download too.
    pub fn digest(&self) -> Digest {
        let stem = self.file.trim_end_matches(".pth");
        let hex = stem.rsplit_once('-').map_or("", |(_, hex)| hex);
        Digest::Sha256Prefix(hex.to_string())
    }

    /// The file in torch.hub's cache (`$TORCH_HOME/hub/checkpoints/`, `TORCH_HOME` defaulting to
    /// `$XDG_CACHE_HOME/torch`, then `~/.cache/torch`), where torchvision left it, if it is there.
    /// Like torch.hub, a file found there is used without checking its digest again.
    pub fn in_torch_hub(&self) -> Option<PathBuf> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("TORCH_HOME")
            .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("torch")))
            .or_else(|| var("HOME").map(|h| h.join(".cache").join("torch")))?;
        let path = home.join("hub").join("checkpoints").join(self.file);
        path.is_file().then_some(path)
    }
}

/// torchvision's weights of `model` named by `source` as torchvision names them
/// (`IMAGENET1K_V2`, `DEFAULT`, or in full `ResNet50_Weights.IMAGENET1K_V2`; any case). `None`
/// when `source` is not such a name (it is a file or a URL); an error naming the setting `what`
/// when it is one that `model` has no weights under.
pub fn torchvision_weights(
    (what, source): (&str, &str),
    model: &str,
) -> Option<Result<TorchvisionWeights>> {
    let (named_model, name) = parse_name(source)?;
    let fail = |why: String| Some(Err(Error::Invalid(format!("`{what}` {source}: {why}"))));
    if let Some(named) = named_model.filter(|m| m != model) {
        return fail(format!("names {named}'s weights, the model is {model}"));
    }
    let own: Vec<&TorchvisionWeights> = TORCHVISION_WEIGHTS
        .iter()
        .filter(|w| w.model == model)
        .collect();
    let Some(default) = own.last() else {
        let mut models: Vec<&str> = TORCHVISION_WEIGHTS.iter().map(|w| w.model).collect();
        models.dedup();
        return fail(format!(
            "torchvision has ImageNet weights for {}, not {model}",
            models.join(", ")
        ));
    };
    match own.iter().find(|w| w.name == name) {
        Some(w) => Some(Ok(**w)),
        None if name == "DEFAULT" => Some(Ok(**default)),
        None => {
            let names: Vec<&str> = own.iter().map(|w| w.name).collect();
            fail(format!(
                "torchvision's {model} has {} (DEFAULT: {})",
                names.join(", "),
                default.name
            ))
        }
    }
}

/// Whether `source` has the form of a torchvision weights name.
pub fn is_torchvision_name(source: &str) -> bool {
    parse_name(source).is_some()
}

/// (the model a full name names, the weights' name), upper case; `None` for anything else. The
/// part before a dot must be a class name (`ResNet50_Weights`), so a path with a dot in it is not
/// taken for a name.
fn parse_name(source: &str) -> Option<(Option<String>, String)> {
    let upper = source.to_ascii_uppercase();
    let (class, name) = match upper.split_once('.') {
        Some((class, name)) => (Some(class.strip_suffix("_WEIGHTS")?), name),
        None => (None, upper.as_str()),
    };
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !word(name) || class.is_some_and(|c| !word(c)) {
        return None;
    }
    if name != "DEFAULT" && !name.starts_with("IMAGENET1K_V") {
        return None;
    }
    Some((class.map(str::to_lowercase), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(model: &str, name: &str) -> TorchvisionWeights {
        match torchvision_weights(("pretrained", name), model) {
            Some(Ok(w)) => w,
            other => panic!("{model} {name}: {other:?}"),
        }
    }

    fn error_of(model: &str, name: &str) -> String {
        match torchvision_weights(("pretrained", name), model) {
            Some(Err(e)) => e.to_string(),
            other => panic!("{model} {name}: {other:?}"),
        }
    }

    #[test]
    fn torchvision_weight_names_resolve_as_torchvision_resolves_them() {
        let models = "https://download.pytorch.org/models";
        // torchvision.models.ResNet50_Weights.DEFAULT is IMAGENET1K_V2, evaluated at resize 232;
        // ResNet18's is V1, at 256
        let w = resolved("resnet50", "DEFAULT");
        assert_eq!(
            (w.url(), w.eval_resize),
            (format!("{models}/resnet50-11ad3fa6.pth"), 232)
        );
        let w = resolved("resnet18", "DEFAULT");
        assert_eq!(
            (w.url(), w.eval_resize),
            (format!("{models}/resnet18-f37072fd.pth"), 256)
        );
        assert_eq!(
            resolved("resnet50", "ResNet50_Weights.IMAGENET1K_V1").url(),
            format!("{models}/resnet50-0676ba61.pth")
        );
        assert_eq!(
            resolved("resnet152", "imagenet1k_v2").url(),
            format!("{models}/resnet152-f82ba261.pth")
        );
        assert_eq!(
            resolved("resnet101", "IMAGENET1K_V2").digest(),
            Digest::Sha256Prefix("cd907fc2".into())
        );
        // torchvision.models.Wide_ResNet50_2_Weights: DEFAULT is V2, at 232; the class name
        // holds the model's name with its underscore
        let w = resolved("wide_resnet50_2", "Wide_ResNet50_2_Weights.DEFAULT");
        assert_eq!(
            (w.url(), w.eval_resize),
            (format!("{models}/wide_resnet50_2-9ba9bcbe.pth"), 232)
        );
        // ResNeXt101_64X4D_Weights: one set, IMAGENET1K_V1, evaluated at 232 like the V2s
        let w = resolved("resnext101_64x4d", "ResNeXt101_64X4D_Weights.DEFAULT");
        assert_eq!(
            (w.name, w.url(), w.eval_resize),
            (
                "IMAGENET1K_V1",
                format!("{models}/resnext101_64x4d-173b62eb.pth"),
                232
            )
        );
        let w = resolved("resnext50_32x4d", "IMAGENET1K_V1");
        assert_eq!(
            (w.url(), w.eval_resize),
            (format!("{models}/resnext50_32x4d-7cdf4587.pth"), 256)
        );
        let w = resolved("wide_resnet101_2", "IMAGENET1K_V1");
        assert_eq!(
            (w.url(), w.eval_resize),
            (format!("{models}/wide_resnet101_2-32ee1156.pth"), 256)
        );
        // files and URLs are not names, even with a name's words in them
        for not_a_name in [
            "resnet50.pth",
            "weights.safetensors",
            "https://x/DEFAULT",
            "weights/ResNet50_Weights.IMAGENET1K_V2",
            "ResNet50_Weights.IMAGENET1K_V2.pth",
        ] {
            assert!(!is_torchvision_name(not_a_name), "{not_a_name}");
        }
    }

    #[test]
    fn a_torchvision_name_a_model_lacks_is_one_error_saying_what_there_is() {
        let e = error_of("resnet20", "DEFAULT");
        assert!(e.contains("resnet20") && e.contains("resnet152"), "{e}");
        assert!(e.contains("resnet101, resnet152, wide_resnet50_2"), "{e}");
        let e = error_of("resnet50", "Wide_ResNet50_2_Weights.IMAGENET1K_V2");
        assert!(e.contains("wide_resnet50_2's weights"), "{e}");
        let e = error_of("resnet18", "IMAGENET1K_V2");
        assert!(e.contains("IMAGENET1K_V1") && e.contains("resnet18"), "{e}");
        let e = error_of("resnet18", "ResNet50_Weights.DEFAULT");
        assert!(e.contains("resnet50") && e.contains("resnet18"), "{e}");
        assert!(e.contains("`pretrained`"), "{e}");
    }
}
