//! `hubsync bench validate`: maps and validates generated member records (SQL rows as the change
//! reader produces them) with the configured mapping on one core, in batches of 100 with the
//! duplicate-email check, and prints records/s and memory before and after.

use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::config::Need;
use crate::exit::{self, Failure};
use crate::mapping::{Mapped, Mapper, SqlRow};

/// Records/s the benchmark aims at: 200 × HubSpot's write ceiling.
const TARGET: f64 = 200_000.0;
/// HubSpot's write ceiling at the default tier: 100 requests / 10 s × 100 records.
const HUBSPOT_CEILING: f64 = 1_000.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Records to map and validate.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Object of `config.yaml` whose mapping applies.
    #[arg(long, default_value = "contacts")]
    pub object: String,
    /// Distinct generated rows, cycled through (keeps memory flat).
    #[arg(long, default_value_t = 10_000)]
    pub pool: usize,
}

pub fn run(config_path: &Path, args: Args) -> Result<u8, Failure> {
    let config = crate::app::load(config_path, Need::Nothing)?;
    let object = config.objects.get(&args.object).ok_or_else(|| {
        Failure::new(
            exit::CONFIG,
            format!("no object {:?} in the configuration", args.object),
        )
    })?;
    let mapper = Mapper::new(object).map_err(|e| Failure::new(exit::CONFIG, e.to_string()))?;
    let mut rng = StdRng::seed_from_u64(5);
    let pool: Vec<SqlRow> = (0..args.pool.max(1))
        .map(|i| member_row(i as u64, &mut rng))
        .collect();
    let rss_before = rss_kib();
    let cpu_before = thread_cpu_seconds();
    let mut batch: Vec<Mapped> = Vec::with_capacity(100);
    let (mut valid, mut rejected) = (0u64, 0u64);
    let started = Instant::now();
    for i in 0..args.records {
        batch.push(mapper.to_hubspot(&pool[i % pool.len()]));
        if batch.len() == 100 || i + 1 == args.records {
            mapper.reject_duplicates(&mut batch);
            for m in batch.drain(..) {
                if m.is_valid() {
                    valid += 1;
                } else {
                    rejected += 1;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, thread_cpu_seconds()) {
        (Some(a), Some(b)) if b > a => Some(b - a),
        _ => None,
    };
    let rss_after = rss_kib();
    // On a shared machine the thread's CPU time is the fair measure of one core's throughput.
    let rate = args.records as f64 / cpu.unwrap_or(elapsed).max(1e-9);
    println!(
        "bench validate: {} records, {} fields each",
        args.records,
        mapper.fields().count()
    );
    println!("  valid {valid}, rejected {rejected}");
    println!(
        "  elapsed {elapsed:.3} s wall ({:.0} records/s), {} s CPU of this thread",
        args.records as f64 / elapsed.max(1e-9),
        cpu.map_or("?".into(), |c| format!("{c:.3}"))
    );
    println!("  {rate:.0} records/s on one core (by CPU time)");
    println!(
        "  ratio to target {TARGET:.0}/s: {:.2}; to HubSpot's write ceiling ({HUBSPOT_CEILING:.0}/s): {:.0}x",
        rate / TARGET,
        rate / HUBSPOT_CEILING
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!("  resident memory: {before} KiB before, {after} KiB after");
    }
    Ok(exit::OK)
}

/// CPU time (user + system) of the calling thread from /proc (Linux, 10 ms ticks); none elsewhere.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Resident set size from /proc (Linux); none elsewhere.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

const FIRST: &[&str] = &[
    "María",
    "José",
    "Ana Lucía",
    "Andrés",
    "Sofía",
    "Ñeco",
    "Luis",
    "Carmen",
];
const LAST: &[&str] = &[
    "Rojas Núñez",
    "Vargas",
    "Jiménez Mora",
    "Solís",
    "Araya",
    "Chaves Peña",
];
const PLACES: &[(&str, &str, &str)] = &[
    ("San José", "Escazú", "San Rafael"),
    ("Alajuela", "San Ramón", "20201"),
    ("Cartago", "Paraíso", "Orosi"),
    ("4", "Heredia", "40101"),
    ("Guanacaste", "Liberia", "Liberia"),
    ("Puntarenas", "Quepos", "Quepos"),
    ("Limón", "Pococí", "La Rita"),
];

/// A member row as the SQL Server change reader delivers it; about 1 in 20 has a problem.
pub fn member_row(i: u64, rng: &mut StdRng) -> SqlRow {
    let (provincia, canton, distrito) = PLACES[rng.random_range(0..PLACES.len())];
    let cedula = format!(
        "{}{:08}",
        rng.random_range(1..=7),
        rng.random_range(1..99_999_999u32)
    );
    let email = if i % 20 == 7 {
        format!("member{i}.example.com")
    } else {
        format!("member{i}@example.com")
    };
    let bruto = rng.random_range(200_000..2_000_000u32);
    let mut row = json!({
        "numero_asociado": i + 1,
        "no__de_cedula": cedula,
        "firstname": FIRST[rng.random_range(0..FIRST.len())],
        "lastname": LAST[rng.random_range(0..LAST.len())],
        "email": email,
        "hs_whatsapp_phone_number": format!("8{:07}", rng.random_range(0..9_999_999u32)),
        "telefono_habitacion": format!("2{:03}-{:04}", rng.random_range(100..999u32), rng.random_range(0..9999u32)),
        "telefono_oficina": Value::Null,
        "date_of_birth": format!("{}-{:02}-{:02}", rng.random_range(1950..2005), rng.random_range(1..=12), rng.random_range(1..=28)),
        "marital_status": rng.random_range(1..=5),
        "provincia": provincia,
        "canton": canton,
        "distrito": distrito,
        "salario_neto_semanal_o_quincenal": format!("{}.00", bruto * 4 / 5),
        "salario_bruto_semanal_o_quincenal": format!("{bruto}.00"),
        "frecuencia_deposito_de_su_salario": "quincenal",
        "nombre_y_apellidos__beneficiario_01_": "Ana Rojas",
        "numero_de_cedula__beneficiario_1_": "2-0345-0678",
        "porcentaje__beneficiario_1_": "60.00",
        "nombre_y_apellidos__beneficiario_02_": "Luis Rojas",
        "numero_de_cedula__beneficiario_2_": "304560789",
        "porcentaje__beneficiario_2_": "40.00",
    });
    if let Value::Object(map) = &mut row {
        for n in 3..=5 {
            map.insert(
                format!("nombre_y_apellidos__beneficiario_0{n}_"),
                Value::Null,
            );
            map.insert(format!("numero_de_cedula__beneficiario_{n}_"), Value::Null);
            map.insert(format!("porcentaje__beneficiario_{n}_"), Value::Null);
        }
        std::mem::take(map)
    } else {
        SqlRow::new()
    }
}
