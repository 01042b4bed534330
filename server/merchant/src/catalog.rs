//! The product catalog: the only source of prices. The page sends SKUs and
//! quantities; amounts are always computed here.
//!
//! Production reads a TOML or JSON file (`catalog_file`):
//! ```toml
//! [[merchants]]
//! mchid = "1900000101"
//! name = "悦读书店 Yuedu Books"
//! [[items]]
//! sku = "book-3body"
//! name = "《三体》 The Three-Body Problem"
//! price_fen = 2380
//! mchid = "1900000101"
//! ```
//! The demo builds one from the simulator's sub-merchants.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Largest amount of one sub-order: 10,000,000 yuan, in fen.
pub const MAX_SUB_ORDER_FEN: i64 = 1_000_000_000;

/// A sub-merchant that sells items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Merchant {
    /// Its mchid (the sub-order's `mchid`).
    pub mchid: String,
    /// Display name.
    pub name: String,
}

/// An item as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemSpec {
    /// SKU.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Unit price in fen.
    pub price_fen: i64,
    /// The selling merchant.
    pub mchid: String,
}

impl ItemSpec {
    /// An item spec.
    pub fn new(
        sku: impl Into<String>,
        name: impl Into<String>,
        price_fen: i64,
        mchid: impl Into<String>,
    ) -> Self {
        Self {
            sku: sku.into(),
            name: name.into(),
            price_fen,
            mchid: mchid.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    merchants: Vec<Merchant>,
    items: Vec<ItemSpec>,
}

/// An item for sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Stock-keeping unit, `[A-Za-z0-9_-]{1,32}`.
    pub sku: String,
    /// Display name (also used in the sub-order description).
    pub name: String,
    /// Unit price in fen.
    pub price_fen: i64,
    /// Who sells it.
    pub merchant: Merchant,
}

/// A catalog that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The file cannot be read.
    #[error("cannot read catalog {path}: {detail}")]
    Read {
        /// The file.
        path: String,
        /// OS error.
        detail: String,
    },
    /// The file does not parse.
    #[error("catalog {path} does not parse: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// Parser message.
        detail: String,
    },
    /// The content breaks a rule.
    #[error("catalog: {0}")]
    Invalid(String),
}

/// The validated catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    merchants: Vec<Merchant>,
    items: Vec<Item>,
    by_sku: HashMap<String, usize>,
}

/// Whether `s` only holds characters WeChat Pay accepts (UTF-8 of 1–3 bytes,
/// so no emoji) and no control characters.
pub fn is_service_text(s: &str) -> bool {
    s.chars().all(|c| c.len_utf8() <= 3 && !c.is_control())
}

impl Catalog {
    /// Reads a TOML (default) or `.json` catalog file.
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| CatalogError::Read {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        let parsed: Result<CatalogFile, String> = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        };
        let file = parsed.map_err(|detail| CatalogError::Parse {
            path: shown,
            detail: detail.trim().to_string(),
        })?;
        Catalog::new(file.merchants, file.items)
    }

    /// Builds and validates a catalog from merchants and
    /// item specs.
    pub fn new(merchants: Vec<Merchant>, entries: Vec<ItemSpec>) -> Result<Catalog, CatalogError> {
        let bad = |m: String| Err(CatalogError::Invalid(m));
        let mut by_mchid = HashMap::new();
        for m in &merchants {
            if m.mchid.is_empty()
                || m.mchid.len() > 32
                || !m.mchid.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return bad(format!(
                    "merchant mchid {:?} must be 1–32 letters or digits",
                    m.mchid
                ));
            }
            if m.name.trim().is_empty() || m.name.chars().count() > 64 || !is_service_text(&m.name)
            {
                return bad(format!(
                    "merchant {} name must be 1–64 characters without emoji or control characters",
                    m.mchid
                ));
            }
            if by_mchid.insert(m.mchid.clone(), m.clone()).is_some() {
                return bad(format!("merchant {} listed twice", m.mchid));
            }
        }
        if merchants.len() < 2 {
            return bad(
                "a combined payment needs at least two sub-merchants; list at least two merchants"
                    .into(),
            );
        }
        let mut items = Vec::with_capacity(entries.len());
        let mut by_sku = HashMap::new();
        for ItemSpec {
            sku,
            name,
            price_fen,
            mchid,
        } in entries
        {
            if sku.is_empty()
                || sku.len() > 32
                || !sku
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return bad(format!("sku {sku:?} must be 1–32 of [A-Za-z0-9_-]"));
            }
            if name.trim().is_empty() || name.chars().count() > 40 || !is_service_text(&name) {
                return bad(format!(
                    "item {sku}: name must be 1–40 characters without emoji or control characters"
                ));
            }
            if !(1..=MAX_SUB_ORDER_FEN).contains(&price_fen) {
                return bad(format!(
                    "item {sku}: price_fen {price_fen} must be 1..={MAX_SUB_ORDER_FEN}"
                ));
            }
            let Some(merchant) = by_mchid.get(&mchid) else {
                return bad(format!(
                    "item {sku}: merchant {mchid} is not in [[merchants]]"
                ));
            };
            if by_sku.insert(sku.clone(), items.len()).is_some() {
                return bad(format!("sku {sku} listed twice"));
            }
            items.push(Item {
                sku,
                name,
                price_fen,
                merchant: merchant.clone(),
            });
        }
        let selling: std::collections::HashSet<_> =
            items.iter().map(|i| &i.merchant.mchid).collect();
        if selling.len() < 2 {
            return bad(
                "items must come from at least two merchants, or no combined order is possible"
                    .into(),
            );
        }
        Ok(Catalog {
            merchants,
            items,
            by_sku,
        })
    }

    /// The demo catalog over the simulator's sub-merchants (at least two;
    /// the first four are used).
    pub fn demo(sub_mchids: &[String]) -> Result<Catalog, CatalogError> {
        // (shop name, [(sku, item name, price in fen)]).
        type Shop = (&'static str, &'static [(&'static str, &'static str, i64)]);
        const SHOPS: [Shop; 4] = [
            (
                "悦读书店 Yuedu Books",
                &[
                    ("book-3body", "《三体》平装 The Three-Body Problem", 2380),
                    ("notebook-kraft", "牛皮纸笔记本 Kraft notebook", 1290),
                ],
            ),
            (
                "山茶咖啡 Camellia Coffee",
                &[
                    ("beans-yunnan", "云南小粒咖啡豆 250g Yunnan beans", 6800),
                    ("coldbrew", "冷萃咖啡 Cold brew", 1800),
                    ("latte-osmanthus", "桂花拿铁 Osmanthus latte", 2200),
                ],
            ),
            (
                "小满花店 Xiaoman Flowers",
                &[
                    ("bouquet-sunflower", "向日葵花束 Sunflower bouquet", 9900),
                    ("succulent", "多肉盆栽 Succulent pot", 2500),
                ],
            ),
            (
                "老街糕点 Old Street Bakery",
                &[
                    ("pastry-eggyolk", "蛋黄酥 Egg-yolk pastry ×6", 3600),
                    ("mungbean-cake", "绿豆糕 Mung bean cake", 1500),
                ],
            ),
        ];
        let mut merchants = Vec::new();
        let mut entries = Vec::new();
        for (mchid, (shop, items)) in sub_mchids.iter().zip(SHOPS.iter()) {
            merchants.push(Merchant {
                mchid: mchid.clone(),
                name: (*shop).to_string(),
            });
            for (sku, name, price) in *items {
                entries.push(ItemSpec::new(*sku, *name, *price, mchid.clone()));
            }
        }
        Catalog::new(merchants, entries)
    }

    /// Looks an item up.
    pub fn item(&self, sku: &str) -> Option<&Item> {
        self.by_sku.get(sku).map(|&i| &self.items[i])
    }

    /// All items, in file order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// All merchants, in file order.
    pub fn merchants(&self) -> &[Merchant] {
        &self.merchants
    }

    /// A merchant's display name.
    pub fn merchant_name(&self, mchid: &str) -> Option<&str> {
        self.merchants
            .iter()
            .find(|m| m.mchid == mchid)
            .map(|m| m.name.as_str())
    }

    /// The catalog as a TOML file (the demo writes it next to its config).
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            merchants: &'a [Merchant],
            items: Vec<ItemOut<'a>>,
        }
        #[derive(Serialize)]
        struct ItemOut<'a> {
            sku: &'a str,
            name: &'a str,
            price_fen: i64,
            mchid: &'a str,
        }
        toml::to_string(&Out {
            merchants: &self.merchants,
            items: self
                .items
                .iter()
                .map(|i| ItemOut {
                    sku: &i.sku,
                    name: &i.name,
                    price_fen: i.price_fen,
                    mchid: &i.merchant.mchid,
                })
                .collect(),
        })
        .expect("catalog serialises")
    }
}

/// The catalog's key, `catalog_file` (optional in demo: built in).
pub mod settings {
    use crate::settings::{FieldKind, FieldTable, Validator};
    use std::path::{Path, PathBuf};

    /// The keys of this subsystem.
    pub const FIELDS: FieldTable = &[("catalog_file", FieldKind::Str)];

    /// Validates `catalog_file`, resolved; required outside demo. `Ok(None)`:
    /// none configured (the demo's built-in catalog); `Err(())`: the problem
    /// is recorded in `v`.
    #[allow(clippy::result_unit_err)]
    pub fn validate(
        catalog_file: Option<&Path>,
        demo: bool,
        v: &mut Validator<'_>,
    ) -> Result<Option<PathBuf>, ()> {
        let file = catalog_file
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| v.path(p));
        if file.is_none() && !demo {
            v.missing::<()>(
                "catalog_file",
                "a TOML or JSON file listing merchants and items; see wxpay.example.toml",
            );
            return Err(());
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("19000001{i:02}")).collect()
    }

    #[test]
    fn demo_catalog_has_three_or_more_merchants_and_round_trips() {
        let c = Catalog::demo(&ids(3)).unwrap();
        assert_eq!(c.merchants().len(), 3);
        assert!((6..=9).contains(&c.items().len()));
        let dir = std::env::temp_dir().join(format!("wxpay-catalog-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("catalog.toml");
        std::fs::write(&p, c.to_toml()).unwrap();
        let back = Catalog::load(&p).unwrap();
        assert_eq!(back.items(), c.items());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn rules_are_enforced() {
        let m = |id: &str| Merchant {
            mchid: id.into(),
            name: "Shop".into(),
        };
        let e = |sku: &str, price: i64, mchid: &str| ItemSpec::new(sku, "Thing", price, mchid);
        assert!(Catalog::new(vec![m("1"), m("2")], vec![e("a", 1, "1"), e("b", 2, "2")]).is_ok());
        for (merchants, entries) in [
            (vec![m("1")], vec![e("a", 1, "1")]),
            (vec![m("1"), m("2")], vec![e("a", 0, "1"), e("b", 2, "2")]),
            (vec![m("1"), m("2")], vec![e("a", 1, "1"), e("a", 2, "2")]),
            (vec![m("1"), m("2")], vec![e("a", 1, "1"), e("b", 2, "3")]),
            (vec![m("1"), m("2")], vec![e("a b", 1, "1"), e("b", 2, "2")]),
            (vec![m("1"), m("2")], vec![e("a", 1, "1"), e("b", 2, "1")]),
            (vec![m("1"), m("1")], vec![e("a", 1, "1")]),
        ] {
            assert!(Catalog::new(merchants, entries).is_err());
        }
        let emoji = vec![
            ItemSpec::new("a", "Cake 🎂", 1, "1"),
            ItemSpec::new("b", "Tea", 1, "2"),
        ];
        assert!(Catalog::new(vec![m("1"), m("2")], emoji).is_err());
    }

    #[test]
    fn unknown_fields_in_file_are_refused() {
        let dir = std::env::temp_dir().join(format!("wxpay-catalog-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.json");
        std::fs::write(
            &p,
            r#"{"merchants":[{"mchid":"1","name":"A"},{"mchid":"2","name":"B"}],
                "items":[{"sku":"a","name":"x","price_fen":1,"mchid":"1","price":5}]}"#,
        )
        .unwrap();
        assert!(matches!(Catalog::load(&p), Err(CatalogError::Parse { .. })));
        std::fs::remove_dir_all(&dir).ok();
    }
}
