//! Costa Rica's territorial division (provincia / cantón / distrito), embedded from
//! `data/costa-rica/` (CC BY 4.0, see its README): lookups by code, by name in any case or
//! accents, or by alias, always answering with the official name.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;

use super::Invalid;
use super::text::fold;

const PROVINCIAS: &str = include_str!("../../data/costa-rica/provincias.csv");
const CANTONES: &str = include_str!("../../data/costa-rica/cantones.csv");
const DISTRITOS: &str = include_str!("../../data/costa-rica/distritos.csv");
const ALIASES: &str = include_str!("../../data/costa-rica/alias.csv");
const RETIRED: &str = include_str!("../../data/costa-rica/codigos_reemplazados.csv");

/// Level of the territorial division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Provincia,
    Canton,
    Distrito,
}

impl Level {
    pub fn from_name(name: &str) -> Option<Level> {
        match name {
            "provincia" => Some(Level::Provincia),
            "canton" => Some(Level::Canton),
            "distrito" => Some(Level::Distrito),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Provincia {
    #[serde(rename = "codigo")]
    pub code: String,
    #[serde(rename = "nombre")]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Canton {
    #[serde(rename = "codigo")]
    pub code: String,
    #[serde(rename = "provincia_codigo")]
    pub provincia: String,
    #[serde(rename = "nombre")]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Distrito {
    #[serde(rename = "codigo")]
    pub code: String,
    #[serde(rename = "canton_codigo")]
    pub canton: String,
    #[serde(rename = "nombre")]
    pub name: String,
}

#[derive(Debug, Deserialize)]
struct Alias {
    nivel: String,
    codigo: String,
    alias: String,
}

#[derive(Debug, Deserialize)]
struct Retired {
    codigo_anterior: String,
    codigos_actuales: String,
    motivo: String,
}

/// The embedded division with its lookup indexes.
pub struct Territory {
    provincias: Vec<Provincia>,
    cantones: Vec<Canton>,
    distritos: Vec<Distrito>,
    provincia_index: HashMap<String, usize>,
    canton_index: HashMap<String, usize>,
    /// Keyed by `canton code + ' ' + folded name`: district names repeat across cantons.
    distrito_index: HashMap<String, usize>,
    distrito_by_code: HashMap<String, usize>,
    /// Official names as written (the common case, and the form HubSpot holds).
    provincia_exact: HashMap<String, usize>,
    canton_exact: HashMap<String, usize>,
    canton_by_code: HashMap<String, usize>,
    /// Cantón code → its distritos.
    distritos_of: HashMap<String, Vec<usize>>,
    /// Folded district name → every district so named, for hints.
    distrito_names: HashMap<String, Vec<usize>>,
    retired: HashMap<String, String>,
}

static TERRITORY: LazyLock<Territory> = LazyLock::new(Territory::load);

/// The embedded territorial division.
pub fn territory() -> &'static Territory {
    &TERRITORY
}

fn read<T: for<'de> Deserialize<'de>>(name: &str, text: &str) -> Vec<T> {
    csv::Reader::from_reader(text.as_bytes())
        .deserialize()
        .collect::<Result<Vec<T>, _>>()
        // The files are part of the binary and checked by the tests below.
        .unwrap_or_else(|e| panic!("embedded data/costa-rica/{name} is malformed: {e}"))
}

/// Comparison keys of a name as typed: folded, with common abbreviations spelled out.
fn lookup_key(input: &str) -> String {
    let folded = fold(input);
    let mut out = String::with_capacity(folded.len() + 8);
    for (i, word) in folded.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(match word {
            "sta" => "santa",
            "sto" => "santo",
            "sn" => "san",
            "pto" => "puerto",
            w => w,
        });
    }
    out
}

/// The key without a leading article (`la rita` → `rita`).
fn without_article(key: &str) -> Option<&str> {
    ["la ", "el ", "los ", "las "]
        .iter()
        .find_map(|a| key.strip_prefix(a))
}

fn insert_names<'a>(
    index: &mut HashMap<String, usize>,
    scope: impl Fn(usize) -> String,
    names: impl Iterator<Item = (usize, &'a str)> + Clone,
) {
    for (i, name) in names.clone() {
        index
            .entry(format!("{}{}", scope(i), lookup_key(name)))
            .or_insert(i);
    }
    for (i, name) in names {
        let key = lookup_key(name);
        if let Some(short) = without_article(&key) {
            index.entry(format!("{}{short}", scope(i))).or_insert(i);
        }
    }
}

impl Territory {
    fn load() -> Territory {
        let provincias: Vec<Provincia> = read("provincias.csv", PROVINCIAS);
        let cantones: Vec<Canton> = read("cantones.csv", CANTONES);
        let distritos: Vec<Distrito> = read("distritos.csv", DISTRITOS);
        let aliases: Vec<Alias> = read("alias.csv", ALIASES);
        let retired: Vec<Retired> = read("codigos_reemplazados.csv", RETIRED);

        let mut provincia_index = HashMap::new();
        insert_names(
            &mut provincia_index,
            |_| String::new(),
            provincias
                .iter()
                .enumerate()
                .map(|(i, p)| (i, p.name.as_str())),
        );
        let mut canton_index = HashMap::new();
        insert_names(
            &mut canton_index,
            |_| String::new(),
            cantones
                .iter()
                .enumerate()
                .map(|(i, c)| (i, c.name.as_str())),
        );
        let mut distrito_index = HashMap::new();
        insert_names(
            &mut distrito_index,
            |i| format!("{} ", distritos[i].canton),
            distritos
                .iter()
                .enumerate()
                .map(|(i, d)| (i, d.name.as_str())),
        );
        let distrito_by_code: HashMap<String, usize> = distritos
            .iter()
            .enumerate()
            .map(|(i, d)| (d.code.clone(), i))
            .collect();
        for a in &aliases {
            let key = lookup_key(&a.alias);
            match a.nivel.as_str() {
                "provincia" => {
                    if let Some(i) = provincias.iter().position(|p| p.code == a.codigo) {
                        provincia_index.entry(key).or_insert(i);
                    }
                }
                "canton" => {
                    if let Some(i) = cantones.iter().position(|c| c.code == a.codigo) {
                        canton_index.entry(key).or_insert(i);
                    }
                }
                _ => {
                    if let Some(&i) = distrito_by_code.get(&a.codigo) {
                        distrito_index
                            .entry(format!("{} {key}", distritos[i].canton))
                            .or_insert(i);
                    }
                }
            }
        }
        let mut distrito_names: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, d) in distritos.iter().enumerate() {
            distrito_names
                .entry(lookup_key(&d.name))
                .or_default()
                .push(i);
        }
        let retired = retired
            .into_iter()
            .map(|r| {
                let current: Vec<String> = r
                    .codigos_actuales
                    .split(';')
                    .map(|code| match distrito_by_code.get(code) {
                        Some(&i) => format!("{code} {}", distritos[i].name),
                        None => code.to_string(),
                    })
                    .collect();
                let message = format!(
                    "distrito code {} is retired ({}); use {}",
                    r.codigo_anterior,
                    r.motivo,
                    current.join(", ")
                );
                (r.codigo_anterior, message)
            })
            .collect();
        let provincia_exact = provincias
            .iter()
            .enumerate()
            .flat_map(|(i, p)| [(p.name.clone(), i), (p.code.clone(), i)])
            .collect();
        let canton_exact = cantones
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let canton_by_code = cantones
            .iter()
            .enumerate()
            .map(|(i, c)| (c.code.clone(), i))
            .collect();
        let mut distritos_of: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, d) in distritos.iter().enumerate() {
            distritos_of.entry(d.canton.clone()).or_default().push(i);
        }
        Territory {
            distritos_of,
            provincia_exact,
            canton_exact,
            canton_by_code,
            provincias,
            cantones,
            distritos,
            provincia_index,
            canton_index,
            distrito_index,
            distrito_by_code,
            distrito_names,
            retired,
        }
    }

    pub fn provincias(&self) -> &[Provincia] {
        &self.provincias
    }

    pub fn cantones(&self) -> &[Canton] {
        &self.cantones
    }

    pub fn distritos(&self) -> &[Distrito] {
        &self.distritos
    }

    fn find(index: &HashMap<String, usize>, scope: &str, key: &str) -> Option<usize> {
        index.get(&format!("{scope}{key}")).copied().or_else(|| {
            without_article(key).and_then(|short| index.get(&format!("{scope}{short}")).copied())
        })
    }

    /// A provincia by code (`1`), name (`san jose`) or ISO code (`CR-SJ`).
    pub fn provincia(&self, input: &str) -> Result<&Provincia, Invalid> {
        let value = input.trim();
        if let Some(&i) = self.provincia_exact.get(value) {
            return Ok(&self.provincias[i]);
        }
        Self::find(&self.provincia_index, "", &lookup_key(value))
            .map(|i| &self.provincias[i])
            .ok_or_else(|| {
                Invalid::new(
                    "territory",
                    format!("{value:?} is not a provincia of Costa Rica (codes 1–7)"),
                )
            })
    }

    pub fn provincia_by_code(&self, code: &str) -> Option<&Provincia> {
        self.provincias.iter().find(|p| p.code == code)
    }

    /// A cantón by 3-digit code (`101`), name or alias (`Aguirre` → Quepos).
    pub fn canton(&self, input: &str) -> Result<&Canton, Invalid> {
        let value = input.trim();
        if let Some(&i) = self
            .canton_exact
            .get(value)
            .or_else(|| self.canton_by_code.get(value))
        {
            return Ok(&self.cantones[i]);
        }
        Self::find(&self.canton_index, "", &lookup_key(value))
            .map(|i| &self.cantones[i])
            .ok_or_else(|| {
                Invalid::new(
                    "territory",
                    format!("{value:?} is not a cantón of Costa Rica"),
                )
            })
    }

    pub fn canton_by_code(&self, code: &str) -> Option<&Canton> {
        self.canton_by_code.get(code).map(|&i| &self.cantones[i])
    }

    /// A distrito by 5-digit code (anywhere), or by name or alias within its cantón.
    pub fn distrito(&self, input: &str, canton: Option<&Canton>) -> Result<&Distrito, Invalid> {
        let value = input.trim();
        if value.len() == 5 && value.bytes().all(|b| b.is_ascii_digit()) {
            if let Some(&i) = self.distrito_by_code.get(value) {
                return Ok(&self.distritos[i]);
            }
            let message = self
                .retired
                .get(value)
                .cloned()
                .unwrap_or_else(|| format!("{value:?} is not a distrito code of Costa Rica"));
            return Err(Invalid::new("territory", message));
        }
        let Some(canton) = canton else {
            return Err(Invalid::new(
                "territory",
                format!("distrito {value:?} can only be found by name within its cantón"),
            ));
        };
        if let Some(&i) = self
            .distritos_of
            .get(&canton.code)
            .and_then(|list| list.iter().find(|&&i| self.distritos[i].name == value))
        {
            return Ok(&self.distritos[i]);
        }
        let key = lookup_key(value);
        if let Some(i) = Self::find(&self.distrito_index, &format!("{} ", canton.code), &key) {
            return Ok(&self.distritos[i]);
        }
        let elsewhere: Vec<String> = self
            .distrito_names
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|&i| {
                let d = &self.distritos[i];
                self.canton_by_code(&d.canton)
                    .map(|c| format!("{} ({})", c.name, d.code))
            })
            .collect();
        let mut message = format!("there is no distrito {value:?} in cantón {}", canton.name);
        if !elsewhere.is_empty() {
            message.push_str(&format!("; it exists in cantón {}", elsewhere.join(", ")));
        }
        Err(Invalid::new("territory", message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_lists_have_the_current_totals() {
        let t = territory();
        assert_eq!(t.provincias().len(), 7);
        assert_eq!(t.cantones().len(), 84);
        assert_eq!(t.distritos().len(), 492);
        let in_province = |p: &str| {
            t.distritos()
                .iter()
                .filter(|d| d.canton.starts_with(p))
                .count()
        };
        assert_eq!(in_province("1"), 123);
        assert_eq!(in_province("7"), 30);
        // Every district's canton exists and every canton's province exists.
        for d in t.distritos() {
            let c = t.canton_by_code(&d.canton).expect(&d.code);
            assert!(t.provincia_by_code(&c.provincia).is_some(), "{}", c.code);
        }
    }

    #[test]
    fn provincia_by_code_name_in_any_case_and_iso_code() {
        let t = territory();
        for input in [
            "1",
            "San José",
            "SAN JOSE",
            "san josé",
            "San  José.",
            "CR-SJ",
            "cr sj",
        ] {
            assert_eq!(t.provincia(input).unwrap().name, "San José", "{input}");
        }
        assert_eq!(t.provincia("limon").unwrap().name, "Limón");
        assert!(t.provincia("8").is_err());
        assert!(t.provincia("Chiriquí").is_err());
    }

    #[test]
    fn canton_by_code_name_and_former_names() {
        let t = territory();
        assert_eq!(t.canton("606").unwrap().name, "Quepos");
        assert_eq!(t.canton("Aguirre").unwrap().name, "Quepos");
        assert_eq!(t.canton("valverde vega").unwrap().name, "Sarchí");
        assert_eq!(t.canton("Alfaro Ruiz").unwrap().name, "Zarcero");
        assert_eq!(t.canton("Coronado").unwrap().name, "Vázquez de Coronado");
        assert_eq!(t.canton("CANAS").unwrap().name, "Cañas");
        assert_eq!(t.canton("Sta. Ana").unwrap().name, "Santa Ana");
        assert_eq!(t.canton("Sto. Domingo").unwrap().name, "Santo Domingo");
        assert_eq!(t.canton("Unión").unwrap().name, "La Unión");
        assert_eq!(t.canton("Guarco").unwrap().name, "El Guarco");
        assert!(t.canton("Narnia").is_err());
    }

    #[test]
    fn distrito_names_resolve_only_within_their_canton() {
        let t = territory();
        let escazu = t.canton("Escazú").unwrap();
        let desamparados = t.canton("Desamparados").unwrap();
        assert_eq!(
            t.distrito("San Rafael", Some(escazu)).unwrap().code,
            "10203"
        );
        assert_eq!(
            t.distrito("san rafael arriba", Some(desamparados))
                .unwrap()
                .code,
            "10304"
        );
        let e = t.distrito("San Rafael", None).unwrap_err();
        assert!(e.message.contains("within its cantón"), "{}", e.message);
        let e = t.distrito("Pavas", Some(escazu)).unwrap_err();
        assert!(
            e.message.contains("no distrito") && e.message.contains("San José (10109)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn distrito_aliases_and_articles() {
        let t = territory();
        let siquirres = t.canton("Siquirres").unwrap();
        assert_eq!(
            t.distrito("El Cairo", Some(siquirres)).unwrap().name,
            "El Cairo"
        );
        assert_eq!(
            t.distrito("cairo", Some(siquirres)).unwrap().name,
            "El Cairo"
        );
        let pococi = t.canton("702").unwrap();
        assert_eq!(t.distrito("La Rita", Some(pococi)).unwrap().name, "Rita");
        let mora = t.canton("Mora").unwrap();
        assert_eq!(
            t.distrito("Ciudad Colón", Some(mora)).unwrap().name,
            "Colón"
        );
        let cartago = t.canton("Cartago").unwrap();
        assert_eq!(
            t.distrito("Cartago", Some(cartago)).unwrap().name,
            "Oriental"
        );
        assert_eq!(
            t.distrito("guadalupe", Some(cartago)).unwrap().code,
            "30106"
        );
        let palmares = t.canton("Palmares").unwrap();
        assert_eq!(
            t.distrito("Esquípulas", Some(palmares)).unwrap().code,
            "20706"
        );
    }

    #[test]
    fn retired_distrito_codes_name_the_current_ones() {
        let t = territory();
        let e = t.distrito("20306", None).unwrap_err();
        assert!(
            e.message.contains("retired") && e.message.contains("21601 Río Cuarto"),
            "{}",
            e.message
        );
        let e = t.distrito("60109", None).unwrap_err();
        assert!(e.message.contains("61201 Monteverde"), "{}", e.message);
        assert_eq!(t.distrito("61301", None).unwrap().name, "Puerto Jiménez");
        assert!(t.distrito("99999", None).is_err());
    }
}
