//! A deterministic, seeded synthetic-data generator: people leaving HMP Leeds, their
//! identifiers at each demo agency, and realistic records of the kinds each agency holds.
//!
//! No real personal data is involved: names come from built-in lists of common first names and
//! surnames, addresses from invented Leeds street names, phone numbers from Ofcom's drama range
//! (01632 960xxx), and NHS numbers from the `9xxxxxxxxx` range that is not issued to patients.
//!
//! Everything follows from [`SynthConfig::seed`]: the same configuration always gives the same
//! people and the same records, and a person's data depends only on the seed and the person's
//! index, so a smaller population is a prefix of a larger one. Identifiers are drawn through
//! keyed permutations of the person index, so they are unique across any population up to
//! [`MAX_PEOPLE`] without any bookkeeping.
//!
//! Dates are relative to [`SynthConfig::reference_date`] ("today" for the data set), never the
//! wall clock.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use throughgate_protocol::category::Category;
use throughgate_protocol::identifiers::{nhs_check_digit, IdScheme, SubjectIdentifier};
use throughgate_protocol::ids::RecordId;
use throughgate_protocol::record::Record;
use throughgate_protocol::time::Date;

use crate::agencies::{demo_agency, AgencyKind, DemoAgency};

/// Records per holder per person that [`SynthConfig::new`] aims for.
pub const DEFAULT_RECORDS_PER_PERSON: usize = 5;

/// The largest population the generator makes; larger requests are clamped. Bounded by the
/// smallest identifier space (council references and NHS numbers, 10^7 each).
pub const MAX_PEOPLE: usize = 10_000_000;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthConfig {
    /// The seed everything is derived from.
    pub seed: u64,
    /// How many people (clamped to [`MAX_PEOPLE`]).
    pub people: usize,
    /// Roughly how many records each holder has about each person it knows (each person gets
    /// this number plus or minus one, at least one, unless this is zero).
    pub records_per_person: usize,
    /// "Today" for the data set: release dates fall within about 60 days before to 90 days
    /// after it, and nothing is recorded after it.
    pub reference_date: Date,
}

impl SynthConfig {
    /// A configuration with [`DEFAULT_RECORDS_PER_PERSON`].
    pub fn new(seed: u64, people: usize, reference_date: Date) -> SynthConfig {
        SynthConfig {
            seed,
            people,
            records_per_person: DEFAULT_RECORDS_PER_PERSON,
            reference_date,
        }
    }
}

/// Why records cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SynthError {
    /// The agency id is not one of the six demo agencies.
    #[error("{0:?} is not a demo agency; expected one of hmp-leeds, probation-yorks, nhs-wy, leeds-college, leeds-cc, dwp")]
    UnknownAgency(String),
}

/// A person's identifier at every demo agency, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identifiers {
    /// Prison: NOMS number, e.g. `A1234BC`.
    pub noms_number: String,
    /// Probation: case reference number, e.g. `X123456`.
    pub crn: String,
    /// NHS number, 10 digits with a valid check digit.
    pub nhs_number: String,
    /// National Insurance number, e.g. `AB123456C`.
    pub ni_number: String,
    /// Unique learner number, 10 digits.
    pub learner_number: String,
    /// Council person reference, `LCC-` and 7 digits.
    pub council_ref: String,
}

impl Identifiers {
    /// The normalised value for `scheme`.
    pub fn get(&self, scheme: IdScheme) -> &str {
        match scheme {
            IdScheme::NomsNumber => &self.noms_number,
            IdScheme::Crn => &self.crn,
            IdScheme::NhsNumber => &self.nhs_number,
            IdScheme::NiNumber => &self.ni_number,
            IdScheme::LearnerNumber => &self.learner_number,
            IdScheme::CouncilRef => &self.council_ref,
        }
    }
}

/// Which agencies know the person (everyone is known to the prison and probation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KnownTo {
    /// Registered with the NHS body (about 90%).
    pub health: bool,
    /// Known to the college (about 40%).
    pub education: bool,
    /// Known to the council (about 50%).
    pub council: bool,
    /// Known to DWP (about 60%).
    pub dwp: bool,
}

impl KnownTo {
    /// Whether an agency of this kind holds records about the person.
    pub fn contains(&self, kind: AgencyKind) -> bool {
        match kind {
            AgencyKind::Prison | AgencyKind::Probation => true,
            AgencyKind::Health => self.health,
            AgencyKind::Education => self.education,
            AgencyKind::Council => self.council,
            AgencyKind::Dwp => self.dwp,
        }
    }
}

/// Circumstances that shape which records the agencies hold, so that they agree with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Needs {
    /// Has a drug or alcohol treatment need.
    pub substance_misuse: bool,
    /// Is on opioid substitution therapy (only with `substance_misuse`).
    pub opioid_substitution: bool,
    /// Has a mental-health need.
    pub mental_health: bool,
    /// Has children.
    pub has_children: bool,
    /// Has no settled address to go to on release.
    pub homeless_on_release: bool,
}

/// A postal address in Leeds (invented street names, real-looking LS postcodes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// House number and street, e.g. "14 Alderholme Road".
    pub line: String,
    /// Postcode, e.g. "LS12 3QD".
    pub postcode: String,
    /// Unique property reference number, 12 digits.
    pub uprn: String,
}

/// One synthetic person leaving prison.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyntheticPerson {
    /// Position in the population; with the seed, it determines everything else.
    pub index: usize,
    /// First name.
    pub given_name: &'static str,
    /// Surname.
    pub family_name: &'static str,
    /// Date of birth (aged 18 to 70 on the reference date).
    pub date_of_birth: Date,
    /// Release date (about 60 days before to 90 days after the reference date).
    pub release_date: Date,
    /// Identifiers at every agency (whether or not the agency knows the person).
    pub identifiers: Identifiers,
    /// Which agencies hold records about the person.
    pub known_to: KnownTo,
    /// Circumstances the records reflect.
    pub needs: Needs,
    /// Where the person lived before custody.
    pub home_address: Address,
    /// Where the person will live on release (unless homeless on release).
    pub release_address: Address,
}

impl SyntheticPerson {
    /// The person's identifier under `scheme`.
    pub fn identifier(&self, scheme: IdScheme) -> SubjectIdentifier {
        SubjectIdentifier {
            scheme,
            value: self.identifiers.get(scheme).to_owned(),
        }
    }

    /// Whether `agency` holds records about the person.
    pub fn is_known_to(&self, agency: &DemoAgency) -> bool {
        self.known_to.contains(agency.kind)
    }

    /// "Given Family".
    pub fn full_name(&self) -> String {
        format!("{} {}", self.given_name, self.family_name)
    }
}

/// A generated population.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Population {
    /// The people, in index order.
    pub people: Vec<SyntheticPerson>,
}

impl Population {
    /// The person holding `id`, if any (a linear scan).
    pub fn find(&self, id: &SubjectIdentifier) -> Option<&SyntheticPerson> {
        self.people
            .iter()
            .find(|p| p.identifiers.get(id.scheme) == id.value)
    }

    /// The people `agency` holds records about.
    pub fn known_to<'a>(
        &'a self,
        agency: &'a DemoAgency,
    ) -> impl Iterator<Item = &'a SyntheticPerson> + 'a {
        self.people.iter().filter(move |p| p.is_known_to(agency))
    }
}

// ---------------------------------------------------------------------------------------------
// Keyed permutations: unique identifiers without bookkeeping.

/// A keyed bijection on `0..n`: a mixing bijection on the enclosing power of two, with cycle
/// walking to stay inside `0..n`.
#[derive(Debug, Clone, Copy)]
struct Perm {
    n: u64,
    bits: u32,
    mask: u64,
    mul: [u64; 2],
    add: [u64; 2],
}

impl Perm {
    fn new(n: u64, rng: &mut ChaCha20Rng) -> Perm {
        let bits = (64 - n.saturating_sub(1).leading_zeros()).max(2);
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        Perm {
            n,
            bits,
            mask,
            mul: [rng.gen::<u64>() | 1, rng.gen::<u64>() | 1],
            add: [rng.gen(), rng.gen()],
        }
    }

    fn mix(&self, mut x: u64) -> u64 {
        let half = self.bits / 2;
        for (m, a) in self.mul.iter().zip(self.add.iter()) {
            x = x.wrapping_mul(*m).wrapping_add(*a) & self.mask;
            x ^= x >> half;
        }
        x
    }

    /// The image of `i`; `i` must be below `n` (callers clamp), which makes the walk finite.
    fn apply(&self, i: u64) -> u64 {
        let mut x = i % self.n.max(1);
        loop {
            x = self.mix(x);
            if x < self.n {
                return x;
            }
        }
    }
}

/// Allowed two-letter National Insurance prefixes (first letter not D F I Q U V, second not
/// D F I O Q U V, and not BG GB NK KN TN NT ZZ).
fn ni_prefixes() -> Vec<[u8; 2]> {
    let mut out = Vec::new();
    for a in b'A'..=b'Z' {
        for b in b'A'..=b'Z' {
            let ok = !b"DFIQUV".contains(&a)
                && !b"DFIOQUV".contains(&b)
                && !matches!(
                    &[a, b],
                    b"BG" | b"GB" | b"NK" | b"KN" | b"TN" | b"NT" | b"ZZ"
                );
            if ok {
                out.push([a, b]);
            }
        }
    }
    out
}

/// The permutations that turn a person index into identifiers.
#[derive(Debug, Clone)]
struct IdPerms {
    noms: Perm,
    crn: Perm,
    nhs: Perm,
    ni: Perm,
    uln: Perm,
    council: Perm,
    ni_prefixes: Vec<[u8; 2]>,
}

const NOMS_SPACE: u64 = 26 * 10_000 * 26 * 26;
const CRN_SPACE: u64 = 26 * 1_000_000;
const NHS_SPACE: u64 = 10_000_000;
const ULN_SPACE: u64 = 9_000_000_000;
const COUNCIL_SPACE: u64 = 10_000_000;

impl IdPerms {
    fn new(seed: u64) -> IdPerms {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x6964_7065_726d_7331);
        let ni_prefixes = ni_prefixes();
        let ni_space = (ni_prefixes.len() as u64) * 1_000_000;
        IdPerms {
            noms: Perm::new(NOMS_SPACE, &mut rng),
            crn: Perm::new(CRN_SPACE, &mut rng),
            nhs: Perm::new(NHS_SPACE, &mut rng),
            ni: Perm::new(ni_space, &mut rng),
            uln: Perm::new(ULN_SPACE, &mut rng),
            council: Perm::new(COUNCIL_SPACE, &mut rng),
            ni_prefixes,
        }
    }

    fn identifiers(&self, index: u64, rng: &mut ChaCha20Rng) -> Identifiers {
        Identifiers {
            noms_number: noms_number(self.noms.apply(index)),
            crn: crn(self.crn.apply(index)),
            nhs_number: nhs_number(self.nhs.apply(index), rng),
            ni_number: self.ni_number(self.ni.apply(index), rng),
            learner_number: format!("{}", 1_000_000_000 + self.uln.apply(index)),
            council_ref: format!("LCC-{:07}", self.council.apply(index)),
        }
    }

    fn ni_number(&self, v: u64, rng: &mut ChaCha20Rng) -> String {
        let prefix = usize::try_from(v / 1_000_000)
            .ok()
            .and_then(|i| self.ni_prefixes.get(i))
            .copied()
            .unwrap_or(*b"AB");
        let suffix = *b"ABCD".choose(rng).unwrap_or(&b'A');
        format!(
            "{}{}{:06}{}",
            char::from(prefix[0]),
            char::from(prefix[1]),
            v % 1_000_000,
            char::from(suffix)
        )
    }
}

fn letter(v: u64) -> char {
    char::from(b'A' + u8::try_from(v % 26).unwrap_or(0))
}

fn noms_number(v: u64) -> String {
    let first = letter(v / (10_000 * 676));
    let digits = (v / 676) % 10_000;
    let rest = v % 676;
    format!("{first}{digits:04}{}{}", letter(rest / 26), letter(rest))
}

fn crn(v: u64) -> String {
    format!("{}{:06}", letter(v / 1_000_000), v % 1_000_000)
}

/// `9` + seven digits from `v` + a ninth digit chosen so a check digit exists + the check
/// digit. At most one ninth digit has no check digit, so trying the next one always works.
fn nhs_number(v: u64, rng: &mut ChaCha20Rng) -> String {
    let mut first = [0u8; 9];
    first[0] = 9;
    let mut rest = v;
    for slot in first.iter_mut().skip(1).take(7).rev() {
        *slot = u8::try_from(rest % 10).unwrap_or(0);
        rest /= 10;
    }
    let start: u8 = rng.gen_range(0..10);
    for step in 0..10u8 {
        first[8] = (start + step) % 10;
        if let Some(check) = nhs_check_digit(&first) {
            let mut s = String::with_capacity(10);
            for d in first.iter().chain(std::iter::once(&check)) {
                s.push(char::from(b'0' + d));
            }
            return s;
        }
    }
    // Unreachable: of ten ninth digits at most one lacks a check digit.
    String::from("9434765919")
}

// ---------------------------------------------------------------------------------------------
// Built-in word lists.

const GIVEN_NAMES: &[&str] = &[
    "James",
    "John",
    "David",
    "Daniel",
    "Michael",
    "Paul",
    "Mark",
    "Lee",
    "Ryan",
    "Jamie",
    "Liam",
    "Connor",
    "Jordan",
    "Kyle",
    "Dean",
    "Craig",
    "Scott",
    "Wayne",
    "Darren",
    "Gary",
    "Stephen",
    "Andrew",
    "Christopher",
    "Matthew",
    "Thomas",
    "Adam",
    "Luke",
    "Callum",
    "Nathan",
    "Aaron",
    "Shane",
    "Kieran",
    "Reece",
    "Bradley",
    "Jake",
    "Mohammed",
    "Imran",
    "Tariq",
    "Kofi",
    "Tomasz",
    "Marek",
    "Sean",
    "Patrick",
    "Robert",
    "Anthony",
    "Carl",
    "Neil",
    "Simon",
    "Jason",
    "Richard",
    "Sarah",
    "Emma",
    "Laura",
    "Gemma",
    "Kelly",
    "Lisa",
    "Nicola",
    "Amy",
    "Rebecca",
    "Chloe",
    "Jade",
    "Leanne",
    "Samantha",
    "Stacey",
    "Danielle",
    "Aisha",
    "Fatima",
    "Zoe",
];

const FAMILY_NAMES: &[&str] = &[
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson",
    "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood",
    "Jackson", "Clarke", "Hughes", "Edwards", "Turner", "Hill", "Moore", "Cooper", "Ward",
    "Harris", "Martin", "King", "Lee", "Baker", "Harrison", "Morgan", "Allen", "Scott", "Young",
    "Mitchell", "Shaw", "Bell", "Atkinson", "Holmes", "Lewis", "Parker", "Marshall", "Dixon",
    "Hussain", "Khan", "Ali", "Ahmed", "Begum", "Patel", "Kowalski", "Nowak", "Murphy", "Kelly",
    "O'Brien", "Mensah", "Okafor", "Campbell", "Stewart", "Kaur", "Singh", "Foster",
];

const STREET_STEMS: &[&str] = &[
    "Alderholme",
    "Brackenfold",
    "Calverdale",
    "Dunstanbeck",
    "Elmwick",
    "Farrowgate",
    "Grayling",
    "Hawksmoor",
    "Ingleby",
    "Jessamine",
    "Kestrelcroft",
    "Larchmere",
    "Millbeck",
    "Nettleworth",
    "Oakhurst",
    "Pennybank",
    "Quarrydale",
    "Rookwith",
    "Sandholme",
    "Thornlea",
    "Underbank",
    "Vinegarth",
    "Wrenfield",
    "Yarrowdene",
    "Ashbeck",
    "Birchmoor",
    "Coppergate",
    "Dalefold",
    "Ellerby",
    "Fernholme",
];

const STREET_SUFFIXES: &[&str] = &[
    "Road", "Street", "Avenue", "Terrace", "Grove", "Close", "Crescent", "Mount", "View", "Place",
    "Lane", "Gardens", "Drive", "Walk",
];

const INWARD_LETTERS: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";

// ---------------------------------------------------------------------------------------------
// People.

fn pick(rng: &mut ChaCha20Rng, list: &[&'static str]) -> &'static str {
    list.choose(rng).copied().unwrap_or("")
}

fn weighted(rng: &mut ChaCha20Rng, list: &[(&'static str, u32)]) -> &'static str {
    list.choose_weighted(rng, |(_, w)| *w)
        .map(|(s, _)| *s)
        .unwrap_or("")
}

fn chance(rng: &mut ChaCha20Rng, percent: u32) -> bool {
    rng.gen_range(0..100) < percent
}

fn days(rng: &mut ChaCha20Rng, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        lo
    } else {
        rng.gen_range(lo..=hi)
    }
}

fn address(rng: &mut ChaCha20Rng) -> Address {
    let number: u32 = rng.gen_range(1..200);
    let street = pick(rng, STREET_STEMS);
    let suffix = pick(rng, STREET_SUFFIXES);
    let district: u32 = rng.gen_range(1..=29);
    let sector: u32 = rng.gen_range(1..10);
    let l1 = char::from(*INWARD_LETTERS.choose(rng).unwrap_or(&b'A'));
    let l2 = char::from(*INWARD_LETTERS.choose(rng).unwrap_or(&b'A'));
    let uprn: u64 = rng.gen_range(100_000_000_000..800_000_000_000);
    Address {
        line: format!("{number} {street} {suffix}"),
        postcode: format!("LS{district} {sector}{l1}{l2}"),
        uprn: uprn.to_string(),
    }
}

fn person(index: usize, perms: &IdPerms, config: &SynthConfig) -> SyntheticPerson {
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed ^ 0x7065_6f70_6c65_0001);
    rng.set_stream(index as u64);
    let given_name = pick(&mut rng, GIVEN_NAMES);
    let family_name = pick(&mut rng, FAMILY_NAMES);
    // Ages 18-70, weighted towards the twenties and thirties like the prison population.
    let a: i64 = rng.gen_range(0..=52);
    let b: i64 = rng.gen_range(0..=52);
    let age = 18 + a.min(b);
    let dob = config
        .reference_date
        .add_days(-(age * 365 + age / 4 + days(&mut rng, 1, 364)));
    let release_date = config.reference_date.add_days(days(&mut rng, -60, 90));
    let identifiers = perms.identifiers(index as u64, &mut rng);
    let known_to = KnownTo {
        health: chance(&mut rng, 90),
        education: chance(&mut rng, 40),
        council: chance(&mut rng, 50),
        dwp: chance(&mut rng, 60),
    };
    let substance_misuse = chance(&mut rng, 45);
    let needs = Needs {
        substance_misuse,
        opioid_substitution: substance_misuse && chance(&mut rng, 50),
        mental_health: chance(&mut rng, 40),
        has_children: chance(&mut rng, 35),
        homeless_on_release: chance(&mut rng, 15),
    };
    let home_address = address(&mut rng);
    let release_address = address(&mut rng);
    SyntheticPerson {
        index,
        given_name,
        family_name,
        date_of_birth: dob,
        release_date,
        identifiers,
        known_to,
        needs,
        home_address,
        release_address,
    }
}

/// Generates the population `config` describes (at most [`MAX_PEOPLE`] people).
pub fn generate_population(config: &SynthConfig) -> Population {
    let g = PersonGenerator::new(config);
    let n = config.people.min(MAX_PEOPLE);
    Population {
        people: (0..n).map(|i| g.person(i)).collect(),
    }
}

/// Makes people one at a time by index, without holding a population: person `i` is the same
/// as in any [`generate_population`] with the same seed and more than `i` people. For loading
/// millions of records without millions of people in memory.
#[derive(Debug, Clone)]
pub struct PersonGenerator {
    perms: IdPerms,
    config: SynthConfig,
}

impl PersonGenerator {
    /// A generator for `config`'s seed and dates (its `people` is ignored).
    pub fn new(config: &SynthConfig) -> PersonGenerator {
        PersonGenerator {
            perms: IdPerms::new(config.seed),
            config: *config,
        }
    }

    /// Person number `index` (indices from [`MAX_PEOPLE`] on are clamped to the last).
    pub fn person(&self, index: usize) -> SyntheticPerson {
        person(index.min(MAX_PEOPLE - 1), &self.perms, &self.config)
    }
}

/// Writes the population as a CSV of people: `index,given_name,family_name`, then one column
/// per demo agency (named by its id) with the person's identifier there, empty where that
/// agency does not know them. What `tg records generate --people-out` writes: the demo's way to
/// find someone to ask about.
pub fn write_people_csv<W: std::io::Write>(
    population: &Population,
    writer: W,
) -> Result<(), csv::Error> {
    let agencies = crate::agencies::demo_agencies();
    let mut w = csv::Writer::from_writer(writer);
    w.write_record(
        ["index", "given_name", "family_name"]
            .into_iter()
            .chain(agencies.iter().map(|a| a.id)),
    )?;
    for person in &population.people {
        w.write_field(person.index.to_string())?;
        w.write_field(person.given_name)?;
        w.write_field(person.family_name)?;
        for a in agencies {
            w.write_field(if person.is_known_to(a) {
                person.identifiers.get(a.scheme)
            } else {
                ""
            })?;
        }
        w.write_record(None::<&[u8]>)?;
    }
    w.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Records.

/// The records `agency_id` holds about the population, in person order.
pub fn records_for(
    agency_id: &str,
    population: &Population,
    config: &SynthConfig,
) -> Result<Vec<Record>, SynthError> {
    Ok(records_iter(agency_id, population, config)?.collect())
}

/// The records `agency_id` holds about the population, generated person by person; the same
/// sequence as [`records_for`] without holding it all in memory.
pub fn records_iter<'a>(
    agency_id: &str,
    population: &'a Population,
    config: &SynthConfig,
) -> Result<RecordsIter<'a>, SynthError> {
    let agency =
        demo_agency(agency_id).ok_or_else(|| SynthError::UnknownAgency(agency_id.to_owned()))?;
    Ok(RecordsIter {
        agency,
        people: population.people.iter(),
        config: *config,
        buffer: Vec::new().into_iter(),
    })
}

/// The records one person has at one agency (empty if the agency does not know them).
pub fn person_records(
    agency: &'static DemoAgency,
    person: &SyntheticPerson,
    config: &SynthConfig,
) -> Vec<Record> {
    if !person.is_known_to(agency) || config.records_per_person == 0 {
        return Vec::new();
    }
    let mut g = Gen::new(agency, person, config);
    match agency.kind {
        AgencyKind::Prison => g.prison(),
        AgencyKind::Probation => g.probation(),
        AgencyKind::Health => g.health(),
        AgencyKind::Education => g.education(),
        AgencyKind::Council => g.council(),
        AgencyKind::Dwp => g.dwp(),
    }
    g.out
}

/// Iterator over one agency's synthetic records; see [`records_iter`].
#[derive(Debug)]
pub struct RecordsIter<'a> {
    agency: &'static DemoAgency,
    people: std::slice::Iter<'a, SyntheticPerson>,
    config: SynthConfig,
    buffer: std::vec::IntoIter<Record>,
}

impl Iterator for RecordsIter<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(r) = self.buffer.next() {
                return Some(r);
            }
            let person = self.people.next()?;
            self.buffer = person_records(self.agency, person, &self.config).into_iter();
        }
    }
}

/// The record kinds the generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PersonIdentity,
    IdDocumentApplication,
    BankAccountApplication,
    CustodyCourse,
    PathwayStatus,
    WorkReadiness,
    OffenderManager,
    ReleaseAddress,
    LicenceCondition,
    RiskAssessment,
    Appointment,
    DutyToRefer,
    GpRegistration,
    ReleasePrescription,
    MentalHealthNeed,
    SubstanceTreatment,
    CourseEnrolment,
    Qualification,
    Cv,
    PreviousTenancy,
    HomelessnessDuty,
    HousingRegister,
    HousingContact,
    FamilyContact,
    BenefitClaim,
    PreviousBenefit,
    JobcentreAppointment,
    HealthAppointment,
}

/// Builds one person's records at one agency.
struct Gen<'a> {
    agency: &'static DemoAgency,
    person: &'a SyntheticPerson,
    subject: &'a str,
    reference: Date,
    rng: ChaCha20Rng,
    target: usize,
    out: Vec<Record>,
    /// How many records `run` has made from the repeat list so far.
    repeats: usize,
    /// Random starting point for walking lists, so repeated kinds differ (see `distinct`).
    offset: usize,
}

impl<'a> Gen<'a> {
    fn new(
        agency: &'static DemoAgency,
        person: &'a SyntheticPerson,
        config: &SynthConfig,
    ) -> Gen<'a> {
        let salt = match agency.kind {
            AgencyKind::Prison => 1,
            AgencyKind::Probation => 2,
            AgencyKind::Health => 3,
            AgencyKind::Education => 4,
            AgencyKind::Council => 5,
            AgencyKind::Dwp => 6,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(config.seed ^ (0x7265_636f_7264_0000 + salt));
        rng.set_stream(person.index as u64);
        let base = config.records_per_person;
        let target = if base >= 2 {
            base - 1 + rng.gen_range(0..3)
        } else {
            base
        };
        let offset = rng.gen_range(0..1_000_000);
        Gen {
            agency,
            person,
            subject: person.identifiers.get(agency.scheme),
            reference: config.reference_date,
            rng,
            target,
            out: Vec::with_capacity(target),
            repeats: 0,
            offset,
        }
    }

    /// Makes the first `target` of `planned`, then cycles through `repeat` to reach it.
    fn run(&mut self, planned: &[Kind], repeat: &[Kind]) {
        for kind in planned.iter().take(self.target) {
            self.make(*kind);
        }
        while self.out.len() < self.target {
            let Some(kind) = repeat.get(self.repeats % repeat.len().max(1)).copied() else {
                break;
            };
            self.repeats += 1;
            self.make(kind);
        }
    }

    fn push(&mut self, category: Category, kind: &str, about: Date, fields: Fields) {
        let n = self.out.len();
        let record_id = RecordId::new(format!("{}-{}-{}", self.agency.short, self.person.index, n));
        let Ok(record_id) = record_id else {
            return;
        };
        let recorded_on = about
            .min(self.reference)
            .add_days(-days(&mut self.rng, 0, 7));
        let secs: u64 = self.rng.gen_range(8 * 3600..18 * 3600);
        self.out.push(Record {
            record_id,
            subject: self.subject.to_owned(),
            category,
            kind: kind.to_owned(),
            fields: fields.0,
            about,
            recorded_at: recorded_on.start_timestamp().plus_secs(secs),
            source_system: self.agency.source_system.to_owned(),
        });
    }

    fn release(&self) -> Date {
        self.person.release_date
    }

    fn pick(&mut self, list: &[&'static str]) -> &'static str {
        pick(&mut self.rng, list)
    }

    fn weighted(&mut self, list: &[(&'static str, u32)]) -> &'static str {
        weighted(&mut self.rng, list)
    }

    fn chance(&mut self, percent: u32) -> bool {
        chance(&mut self.rng, percent)
    }

    /// The release date shifted by a random number of days in `lo..=hi`.
    fn around_release(&mut self, lo: i64, hi: i64) -> Date {
        self.release().add_days(days(&mut self.rng, lo, hi))
    }

    /// A date `lo..=hi` days from the release date that is not after the reference date: the
    /// window is cut off at the reference date, and when all of it lies later (a release far
    /// ahead), a date within the window's width before the reference date instead.
    fn past_around_release(&mut self, lo: i64, hi: i64) -> Date {
        let top = hi.min(day_diff(self.release(), self.reference));
        if top >= lo {
            self.around_release(lo, top)
        } else {
            self.reference.add_days(-days(&mut self.rng, 0, hi - lo))
        }
    }

    /// An item of `list` different from those this person's earlier `kind` records used (until
    /// the list runs out): the list is walked from a random starting point.
    fn distinct<T: Copy>(&self, list: &[T], kind: &str) -> Option<T> {
        let made = self.out.iter().filter(|r| r.kind == kind).count();
        list.get((self.offset + made) % list.len().max(1)).copied()
    }

    fn time_slot(&mut self) -> String {
        let slot: u32 = self.rng.gen_range(0..16);
        format!("{:02}:{:02}", 9 + slot / 2, (slot % 2) * 30)
    }

    fn staff_name(&mut self) -> String {
        format!("{} {}", self.pick(GIVEN_NAMES), self.pick(FAMILY_NAMES))
    }

    fn make(&mut self, kind: Kind) {
        match kind {
            Kind::PersonIdentity => self.person_identity(),
            Kind::IdDocumentApplication => self.id_document_application(),
            Kind::BankAccountApplication => self.bank_account_application(),
            Kind::CustodyCourse => self.custody_course(),
            Kind::PathwayStatus => self.pathway_status(),
            Kind::WorkReadiness => self.work_readiness(),
            Kind::OffenderManager => self.offender_manager(),
            Kind::ReleaseAddress => self.release_address(),
            Kind::LicenceCondition => self.licence_condition(),
            Kind::RiskAssessment => self.risk_assessment(),
            Kind::Appointment => self.appointment(),
            Kind::DutyToRefer => self.duty_to_refer(),
            Kind::GpRegistration => self.gp_registration(),
            Kind::ReleasePrescription => self.release_prescription(),
            Kind::MentalHealthNeed => self.mental_health_need(),
            Kind::SubstanceTreatment => self.substance_treatment(),
            Kind::CourseEnrolment => self.course_enrolment(),
            Kind::Qualification => self.qualification(),
            Kind::Cv => self.cv(),
            Kind::PreviousTenancy => self.previous_tenancy(),
            Kind::HomelessnessDuty => self.homelessness_duty(),
            Kind::HousingRegister => self.housing_register(),
            Kind::HousingContact => self.housing_contact(),
            Kind::FamilyContact => self.family_contact(),
            Kind::BenefitClaim => self.benefit_claim(),
            Kind::PreviousBenefit => self.previous_benefit(),
            Kind::JobcentreAppointment => self.jobcentre_appointment(),
            Kind::HealthAppointment => self.health_appointment(),
        }
    }

    // ---- plans per agency

    fn prison(&mut self) {
        self.run(
            &[
                Kind::PersonIdentity,
                Kind::IdDocumentApplication,
                Kind::BankAccountApplication,
                Kind::CustodyCourse,
                Kind::PathwayStatus,
                Kind::WorkReadiness,
            ],
            &[Kind::CustodyCourse, Kind::IdDocumentApplication],
        );
    }

    fn probation(&mut self) {
        let mut plan = vec![
            Kind::OffenderManager,
            Kind::ReleaseAddress,
            Kind::LicenceCondition,
            Kind::RiskAssessment,
            Kind::Appointment,
        ];
        if self.person.needs.homeless_on_release {
            plan.insert(2, Kind::DutyToRefer);
        }
        self.run(&plan, &[Kind::Appointment, Kind::LicenceCondition]);
    }

    fn health(&mut self) {
        let mut plan = vec![Kind::GpRegistration];
        if self.person.needs.substance_misuse {
            plan.push(Kind::SubstanceTreatment);
        }
        if self.person.needs.mental_health {
            plan.push(Kind::MentalHealthNeed);
        }
        plan.push(Kind::ReleasePrescription);
        self.run(&plan, &[Kind::HealthAppointment, Kind::ReleasePrescription]);
    }

    fn education(&mut self) {
        self.run(
            &[Kind::CourseEnrolment, Kind::Qualification, Kind::Cv],
            &[Kind::Qualification, Kind::CourseEnrolment],
        );
    }

    fn council(&mut self) {
        let mut plan = vec![Kind::PreviousTenancy];
        if self.person.needs.homeless_on_release {
            plan.push(Kind::HomelessnessDuty);
        }
        if self.person.needs.has_children {
            plan.push(Kind::FamilyContact);
        }
        plan.push(Kind::HousingRegister);
        let repeat: &[Kind] = if self.person.needs.has_children {
            &[Kind::HousingContact, Kind::FamilyContact]
        } else {
            &[Kind::HousingContact]
        };
        self.run(&plan, repeat);
    }

    fn dwp(&mut self) {
        self.run(
            &[
                Kind::BenefitClaim,
                Kind::JobcentreAppointment,
                Kind::PreviousBenefit,
            ],
            &[Kind::JobcentreAppointment],
        );
    }

    // ---- prison (NOMIS)

    fn person_identity(&mut self) {
        let p = self.person;
        let release_type = self.weighted(&[
            ("conditional_release", 70),
            ("home_detention_curfew", 15),
            ("end_of_sentence", 10),
            ("parole", 5),
        ]);
        let f = Fields::new()
            .with("given_name", p.given_name)
            .with("family_name", p.family_name)
            .with("date_of_birth", p.date_of_birth.to_string())
            .with("release_date", p.release_date.to_string())
            .with("release_type", release_type)
            .with("establishment", "HMP Leeds");
        self.push(Category::FinanceAndId, "person_identity", p.release_date, f);
    }

    fn id_document_application(&mut self) {
        const DOCUMENTS: &[(&str, u32)] = &[
            ("birth_certificate", 45),
            ("driving_licence", 25),
            ("passport", 20),
            ("biometric_residence_permit", 3),
            ("citizen_card", 7),
        ];
        let document = if self.out.iter().any(|r| r.kind == "id_document_application") {
            self.distinct(DOCUMENTS, "id_document_application")
                .map_or("passport", |(d, _)| d)
        } else {
            self.weighted(DOCUMENTS)
        };
        let status = self.weighted(&[("applied", 40), ("received", 45), ("not_started", 15)]);
        let mut f = Fields::new()
            .with("document", document)
            .with("status", status);
        let about = if status == "not_started" {
            self.past_around_release(-30, 0)
        } else {
            let applied = self.past_around_release(-90, -14);
            f = f.with("applied_on", applied.to_string());
            if status == "received" {
                let received = applied
                    .add_days(days(&mut self.rng, 10, 40))
                    .min(self.reference);
                f = f.with("received_on", received.to_string());
            }
            applied
        };
        self.push(Category::FinanceAndId, "id_document_application", about, f);
    }

    fn bank_account_application(&mut self) {
        let bank = self.pick(&[
            "Barclays",
            "Lloyds",
            "NatWest",
            "Co-operative Bank",
            "Nationwide",
            "Santander",
        ]);
        let status = self.weighted(&[
            ("not_started", 15),
            ("applied", 35),
            ("opened", 40),
            ("refused", 10),
        ]);
        let mut f = Fields::new().with("bank", bank).with("status", status);
        let about = self.past_around_release(-70, -7);
        if status != "not_started" {
            f = f.with("applied_on", about.to_string());
        }
        if status == "refused" {
            f = f.with(
                "reason",
                self.pick(&[
                    "no_proof_of_address",
                    "no_photo_id",
                    "previous_fraud_marker",
                ]),
            );
        }
        self.push(Category::FinanceAndId, "bank_account_application", about, f);
    }

    fn custody_course(&mut self) {
        let (course, level) = self
            .distinct(
                &[
                    ("Functional Skills English", "entry_3"),
                    ("Functional Skills English", "level_1"),
                    ("Functional Skills Maths", "level_1"),
                    ("Food Hygiene", "level_2"),
                    ("CSCS Health and Safety", "level_1"),
                    ("Industrial Cleaning", "level_2"),
                    ("Barbering", "level_2"),
                    ("Counterbalance Forklift", "level_2"),
                    ("ICT Essentials", "entry_3"),
                    ("Painting and Decorating", "level_1"),
                    ("Peer Mentoring", "level_2"),
                ],
                "custody_course",
            )
            .unwrap_or(("ICT Essentials", "entry_3"));
        let outcome = self.weighted(&[
            ("passed", 55),
            ("in_progress", 25),
            ("withdrawn", 10),
            ("failed", 10),
        ]);
        let mut f = Fields::new()
            .with("course", course)
            .with("level", level)
            .with("outcome", outcome)
            .with("provider", "HMP Leeds Education");
        let about = match outcome {
            "passed" | "failed" => {
                let done = self.past_around_release(-300, -10);
                f = f.with("completed_on", done.to_string());
                done
            }
            _ => {
                let start = self.past_around_release(-120, -20);
                f = f.with("started_on", start.to_string());
                start
            }
        };
        self.push(Category::EducationSkillsAndWork, "custody_course", about, f);
    }

    fn pathway_status(&mut self) {
        let programme = self.pick(&[
            "Thinking Skills Programme",
            "Building Better Relationships",
            "Resolve",
            "Horizon",
            "Kaizen",
            "Becoming New Me+",
        ]);
        let status = self.weighted(&[
            ("not_assessed", 10),
            ("assessed_suitable", 20),
            ("in_progress", 20),
            ("completed", 35),
            ("not_required", 15),
        ]);
        let updated = self.past_around_release(-200, -5);
        let f = Fields::new()
            .with("programme", programme)
            .with("status", status)
            .with("updated_on", updated.to_string());
        self.push(
            Category::AttitudesThinkingAndBehaviour,
            "pathway_status",
            updated,
            f,
        );
    }

    fn work_readiness(&mut self) {
        let job = self.pick(&[
            "kitchens",
            "laundry",
            "recycling",
            "wing_cleaner",
            "gardens",
            "education_orderly",
            "textiles_workshop",
        ]);
        let assessment = self.weighted(&[
            ("ready_for_work", 45),
            ("needs_support", 40),
            ("not_assessed", 15),
        ]);
        let assessed = self.past_around_release(-60, -7);
        let f = Fields::new()
            .with("prison_job", job)
            .with("assessment", assessment)
            .with(
                "disclosure_letter",
                self.pick(&["drafted", "not_started", "complete"]),
            )
            .with("assessed_on", assessed.to_string());
        self.push(
            Category::EducationSkillsAndWork,
            "work_readiness",
            assessed,
            f,
        );
    }

    // ---- probation (nDelius)

    fn offender_manager(&mut self) {
        let name = self.staff_name();
        let team = self.pick(&[
            "Leeds North PDU",
            "Leeds East PDU",
            "Leeds West PDU",
            "Leeds South PDU",
            "Leeds City PDU",
        ]);
        let phone = format!("01632 960{:03}", self.rng.gen_range(0..1000));
        let allocated = self.past_around_release(-120, -30);
        let f = Fields::new()
            .with("name", name)
            .with("team", team)
            .with("phone", phone)
            .with("allocated_on", allocated.to_string());
        self.push(Category::Supervision, "offender_manager", allocated, f);
    }

    fn release_address(&mut self) {
        let p = self.person;
        let mut f = Fields::new();
        if p.needs.homeless_on_release {
            f = f.with("address_type", "no_fixed_abode");
        } else {
            let kind = self.weighted(&[
                ("approved_premises", 15),
                ("family_or_friends", 40),
                ("private_rented", 15),
                ("social_housing", 20),
                ("supported_housing", 10),
            ]);
            f = f
                .with("address_type", kind)
                .with("address_line", p.release_address.line.as_str())
                .with("town", "Leeds")
                .with("postcode", p.release_address.postcode.as_str())
                .with("uprn", p.release_address.uprn.as_str());
        }
        let confirmed = self.past_around_release(-30, -3);
        f = f.with("confirmed_on", confirmed.to_string());
        self.push(
            Category::Accommodation,
            "release_address",
            p.release_date,
            f,
        );
    }

    fn licence_condition(&mut self) {
        const STANDARD: &[&str] = &[
            "Be of good behaviour and not commit any offence",
            "Keep in touch with the supervising officer as instructed",
            "Receive visits from the supervising officer as instructed",
            "Reside permanently at an address approved by the supervising officer",
        ];
        const ADDITIONAL: &[&str] = &[
            "Reside at an approved address",
            "Not to contact named victim without prior approval",
            "Comply with a curfew between 19:00 and 07:00",
            "Not to enter the exclusion zone shown on the attached map without approval",
            "Attend drug testing as directed",
            "Attend all appointments with the substance misuse service",
            "Engage with mental health services as directed",
            "Not to own or possess more than one mobile phone",
            "Notify the supervising officer of any developing intimate relationship",
            "Not to approach or communicate with named co-defendants",
        ];
        let additional = self.repeats > 0 || self.chance(60);
        let condition = if additional {
            self.distinct(ADDITIONAL, "licence_condition")
                .unwrap_or("Reside at an approved address")
        } else {
            self.pick(STANDARD)
        };
        let months = days(&mut self.rng, 6, 24);
        let end = self.release().add_days(months * 30);
        let f = Fields::new()
            .with("condition", condition)
            .with(
                "condition_type",
                if additional { "additional" } else { "standard" },
            )
            .with("licence_start", self.release().to_string())
            .with("licence_end", end.to_string());
        let release = self.release();
        self.push(Category::Supervision, "licence_condition", release, f);
    }

    fn risk_assessment(&mut self) {
        let rosh = self.weighted(&[("low", 35), ("medium", 45), ("high", 17), ("very_high", 3)]);
        let mappa = match rosh {
            "very_high" => self.weighted(&[("2", 60), ("3", 40)]),
            "high" => self.weighted(&[("0", 30), ("1", 50), ("2", 20)]),
            _ => self.weighted(&[("0", 85), ("1", 15)]),
        };
        let assessed = self.past_around_release(-60, -10);
        let f = Fields::new()
            .with("rosh_level", rosh)
            .with("mappa_level", mappa)
            .with("tool", "OASys")
            .with("assessed_on", assessed.to_string());
        self.push(Category::Risk, "risk_assessment", assessed, f);
    }

    fn appointment(&mut self) {
        let first = self.repeats == 0;
        let date = if first {
            self.release()
        } else {
            self.around_release(2, 90)
        };
        let kind = if first {
            "initial_induction"
        } else {
            self.pick(&[
                "supervision",
                "drug_test",
                "programme_session",
                "home_visit",
            ])
        };
        let location = self.pick(&[
            "Leeds City Probation Office",
            "Leeds East Probation Office",
            "Leeds West Probation Office",
            "Approved Premises, Leeds",
        ]);
        let f = Fields::new()
            .with("date", date.to_string())
            .with("time", self.time_slot())
            .with("location", location)
            .with("kind", kind);
        self.push(Category::Supervision, "appointment", date, f);
    }

    fn duty_to_refer(&mut self) {
        let referred = self.past_around_release(-56, -10);
        let f = Fields::new()
            .with("referred_to", "Leeds City Council")
            .with("referred_on", referred.to_string())
            .with(
                "reason",
                self.pick(&["homeless_on_release", "at_risk_of_homelessness"]),
            )
            .with(
                "outcome",
                self.weighted(&[
                    ("pending", 30),
                    ("prevention_duty", 25),
                    ("relief_duty", 35),
                    ("declined", 10),
                ]),
            );
        self.push(Category::Accommodation, "duty_to_refer", referred, f);
    }

    // ---- health (SystmOne)

    fn gp_registration(&mut self) {
        let (practice, ods) = *[
            ("Alderholme Medical Practice", "Y90101"),
            ("Calverdale Surgery", "Y90102"),
            ("Farrowgate Health Centre", "Y90103"),
            ("Millbeck Family Practice", "Y90104"),
            ("Thornlea Medical Centre", "Y90105"),
            ("Wrenfield Surgery", "Y90106"),
            ("Leeds Homeless Health Practice", "Y90107"),
        ]
        .choose(&mut self.rng)
        .unwrap_or(&("Calverdale Surgery", "Y90102"));
        let status = self.weighted(&[("registered", 65), ("pending", 25), ("not_registered", 10)]);
        let mut f = Fields::new()
            .with("practice", practice)
            .with("ods_code", ods)
            .with("status", status);
        let about = self.past_around_release(-21, 14);
        if status == "registered" {
            f = f.with("registered_on", about.to_string());
        }
        self.push(Category::Health, "gp_registration", about, f);
    }

    fn release_prescription(&mut self) {
        let (medication, dose) = self
            .distinct(
                &[
                    ("Sertraline", "50mg once daily"),
                    ("Mirtazapine", "15mg at night"),
                    ("Omeprazole", "20mg once daily"),
                    ("Salbutamol inhaler", "2 puffs when required"),
                    ("Amlodipine", "5mg once daily"),
                    ("Metformin", "500mg twice daily"),
                    ("Naproxen", "250mg twice daily"),
                    ("Quetiapine", "100mg at night"),
                    ("Fluoxetine", "20mg once daily"),
                    ("Levothyroxine", "50 micrograms once daily"),
                ],
                "release_prescription",
            )
            .unwrap_or(("Omeprazole", "20mg once daily"));
        let supply = self.pick(&["7", "14", "28"]);
        let issued = self.release().add_days(-1);
        let f = Fields::new()
            .with("medication", medication)
            .with("dose", dose)
            .with("supply_days", supply)
            .with("issued_on", issued.to_string());
        self.push(Category::Health, "release_prescription", issued, f);
    }

    fn health_appointment(&mut self) {
        let date = self.around_release(3, 60);
        let (kind, clinic) = self
            .distinct(
                &[
                    ("gp_review", "GP practice"),
                    ("medication_review", "GP practice"),
                    ("blood_test", "Phlebotomy clinic, Leeds General"),
                    ("mental_health_review", "Community Mental Health Team"),
                    ("dental", "Community Dental Service"),
                    ("hepatitis_c_follow_up", "Liver clinic, Leeds General"),
                ],
                "health_appointment",
            )
            .unwrap_or(("gp_review", "GP practice"));
        let f = Fields::new()
            .with("date", date.to_string())
            .with("time", self.time_slot())
            .with("kind", kind)
            .with("clinic", clinic);
        self.push(Category::Health, "health_appointment", date, f);
    }

    fn mental_health_need(&mut self) {
        let identified = self.past_around_release(-180, -14);
        let f = Fields::new()
            .with(
                "need",
                self.weighted(&[
                    ("depression", 35),
                    ("anxiety", 30),
                    ("ptsd", 15),
                    ("psychosis", 10),
                    ("bipolar_disorder", 10),
                ]),
            )
            .with(
                "service",
                self.pick(&[
                    "Community Mental Health Team",
                    "Primary Care Mental Health Service",
                    "Liaison and Diversion",
                ]),
            )
            .with(
                "referral_status",
                self.pick(&["referred", "accepted", "waiting_list", "not_referred"]),
            )
            .with("identified_on", identified.to_string());
        self.push(Category::Health, "mental_health_need", identified, f);
    }

    fn substance_treatment(&mut self) {
        let opioid = self.person.needs.opioid_substitution;
        let mut f = Fields::new().with("service", "Leeds Community Recovery Service");
        if opioid {
            let (med, dose) = if self.chance(60) {
                (
                    "methadone",
                    format!("{}mg daily", 10 * days(&mut self.rng, 3, 9)),
                )
            } else {
                (
                    "buprenorphine",
                    format!("{}mg daily", 2 * days(&mut self.rng, 2, 8)),
                )
            };
            f = f
                .with("substance", "opioids")
                .with("medication", med)
                .with("dose", dose);
        } else {
            f = f
                .with(
                    "substance",
                    self.pick(&["alcohol", "cannabis", "crack_cocaine", "cocaine"]),
                )
                .with("medication", "none");
        }
        let status = self.weighted(&[
            ("first_appointment_booked", 45),
            ("transferred", 25),
            ("at_risk", 15),
            ("not_required", 15),
        ]);
        f = f.with("continuity_status", status);
        if status == "first_appointment_booked" {
            let first = self.around_release(0, 2);
            f = f.with("first_appointment", first.to_string());
        }
        let about = self.release();
        self.push(Category::DrugsAndAlcohol, "substance_treatment", about, f);
    }

    // ---- education (college MIS)

    fn course_enrolment(&mut self) {
        let (course, level) = self
            .distinct(
                &[
                    ("Construction Skills", "level_1"),
                    ("Functional Skills Maths", "level_2"),
                    ("Functional Skills English", "level_2"),
                    ("Warehousing and Storage", "level_2"),
                    ("Hospitality and Catering", "level_1"),
                    ("Digital Skills for Work", "entry_3"),
                    ("Motor Vehicle Maintenance", "level_1"),
                    ("Health and Social Care", "level_2"),
                ],
                "course_enrolment",
            )
            .unwrap_or(("Digital Skills for Work", "entry_3"));
        let start = self.around_release(14, 120);
        let f = Fields::new()
            .with("course", course)
            .with("level", level)
            .with("start_date", start.to_string())
            .with(
                "status",
                self.weighted(&[
                    ("offered", 40),
                    ("enrolled", 35),
                    ("deferred", 15),
                    ("withdrawn", 10),
                ]),
            )
            .with(
                "campus",
                self.pick(&["City campus", "North campus", "East campus"]),
            );
        self.push(
            Category::EducationSkillsAndWork,
            "course_enrolment",
            start,
            f,
        );
    }

    fn qualification(&mut self) {
        let (title, level) = self
            .distinct(
                &[
                    ("GCSE English Language", "level_2"),
                    ("GCSE Mathematics", "level_2"),
                    ("Functional Skills English", "level_1"),
                    ("Certificate in Construction Operations", "level_1"),
                    ("Award in Food Safety in Catering", "level_2"),
                    ("Diploma in Motor Vehicle Maintenance", "level_2"),
                    ("Certificate in Warehousing and Storage", "level_2"),
                ],
                "qualification",
            )
            .unwrap_or(("GCSE Mathematics", "level_2"));
        // Sometime between the seventeenth birthday and a year before release.
        let age_at_release =
            i64::from(self.release().year()) - i64::from(self.person.date_of_birth.year());
        let span = (age_at_release - 18).max(0) * 365;
        let awarded = self.release().add_days(-365 - days(&mut self.rng, 0, span));
        let f = Fields::new()
            .with("title", title)
            .with("level", level)
            .with(
                "grade",
                self.weighted(&[("pass", 60), ("merit", 25), ("distinction", 15)]),
            )
            .with("awarded_on", awarded.to_string());
        self.push(
            Category::EducationSkillsAndWork,
            "qualification",
            awarded,
            f,
        );
    }

    fn cv(&mut self) {
        let updated = self.past_around_release(-60, 10);
        let f = Fields::new()
            .with("status", self.pick(&["draft", "complete", "needs_update"]))
            .with(
                "skills",
                self.pick(&[
                    "Forklift, stock control, teamwork",
                    "Food hygiene, kitchen work, cleaning",
                    "Painting and decorating, customer service",
                    "Labouring, CSCS card, driving",
                    "Computer skills, admin, reception",
                ]),
            )
            .with("work_history_years", days(&mut self.rng, 0, 20).to_string())
            .with("last_updated", updated.to_string());
        self.push(Category::EducationSkillsAndWork, "cv", updated, f);
    }

    // ---- council (housing system)

    fn previous_tenancy(&mut self) {
        let p = self.person;
        let a = &p.home_address;
        let status = self.weighted(&[("kept", 35), ("ended", 65)]);
        let arrears_pounds = if self.chance(55) {
            days(&mut self.rng, 50, 3000)
        } else {
            0
        };
        let pence = days(&mut self.rng, 0, 99);
        let mut f = Fields::new()
            .with("address_line", a.line.as_str())
            .with("postcode", a.postcode.as_str())
            .with("uprn", a.uprn.as_str())
            .with(
                "tenure",
                self.weighted(&[
                    ("council", 50),
                    ("housing_association", 30),
                    ("private_rented", 20),
                ]),
            )
            .with("status", status)
            .with(
                "arrears_gbp",
                if arrears_pounds == 0 {
                    "0.00".to_owned()
                } else {
                    format!("{arrears_pounds}.{pence:02}")
                },
            );
        let about = if status == "ended" {
            let ended = self.past_around_release(-400, -30);
            f = f.with("ended_on", ended.to_string());
            ended
        } else {
            self.past_around_release(-30, 0)
        };
        self.push(Category::Accommodation, "previous_tenancy", about, f);
    }

    fn homelessness_duty(&mut self) {
        let decided = self.past_around_release(-40, 5);
        let f = Fields::new()
            .with(
                "duty",
                self.weighted(&[("prevention", 35), ("relief", 45), ("main_duty", 20)]),
            )
            .with(
                "status",
                self.pick(&["open", "decision_pending", "accommodation_offered"]),
            )
            .with(
                "referral_source",
                self.pick(&["probation", "prison", "self"]),
            )
            .with("decision_on", decided.to_string());
        self.push(Category::Accommodation, "homelessness_duty", decided, f);
    }

    fn housing_register(&mut self) {
        let registered = self.past_around_release(-700, -20);
        let f = Fields::new()
            .with(
                "band",
                self.weighted(&[("band_a", 10), ("band_b", 35), ("band_c", 55)]),
            )
            .with(
                "status",
                self.pick(&["active", "suspended", "pending_review"]),
            )
            .with("registered_on", registered.to_string());
        self.push(Category::Accommodation, "housing_register", registered, f);
    }

    fn housing_contact(&mut self) {
        let on = self.past_around_release(-60, 30);
        let f = Fields::new()
            .with("contact_on", on.to_string())
            .with(
                "channel",
                self.pick(&["phone", "in_person", "letter", "email"]),
            )
            .with(
                "topic",
                self.pick(&[
                    "rent_arrears",
                    "housing_options",
                    "repairs",
                    "council_tax",
                    "tenancy_sustainment",
                ]),
            );
        self.push(Category::Accommodation, "housing_contact", on, f);
    }

    fn family_contact(&mut self) {
        let recorded = self.past_around_release(-200, 0);
        let f = Fields::new()
            .with(
                "relationship",
                self.weighted(&[
                    ("children", 60),
                    ("partner", 20),
                    ("parent", 15),
                    ("sibling", 5),
                ]),
            )
            .with(
                "contact_arrangement",
                self.pick(&["supervised", "unsupervised", "letterbox", "no_contact"]),
            )
            .with(
                "children_services_involved",
                if self.chance(30) { "yes" } else { "no" },
            )
            .with("recorded_on", recorded.to_string());
        self.push(
            Category::ChildrenFamiliesAndCommunity,
            "family_contact",
            recorded,
            f,
        );
    }

    // ---- DWP (CIS)

    fn benefit_claim(&mut self) {
        let age_years =
            i64::from(self.reference.year()) - i64::from(self.person.date_of_birth.year());
        let benefit = if age_years >= 66 {
            "pension_credit"
        } else {
            self.weighted(&[
                ("universal_credit", 85),
                ("personal_independence_payment", 10),
                ("employment_and_support_allowance", 5),
            ])
        };
        let status = self.weighted(&[
            ("claim_started", 35),
            ("awaiting_interview", 30),
            ("in_payment", 25),
            ("not_claimed", 10),
        ]);
        let claim_date = self.past_around_release(-14, 3);
        let mut f = Fields::new()
            .with("benefit", benefit)
            .with("status", status)
            .with("claim_date", claim_date.to_string());
        if benefit == "universal_credit" && status != "not_claimed" {
            let advance = self.weighted(&[("requested", 30), ("paid", 40), ("not_requested", 30)]);
            f = f.with("advance_payment", advance);
            if advance == "paid" {
                f = f.with(
                    "advance_amount_gbp",
                    format!("{}.00", 50 * days(&mut self.rng, 4, 16)),
                );
            }
        }
        self.push(Category::FinanceAndId, "benefit_claim", claim_date, f);
    }

    fn previous_benefit(&mut self) {
        let ended = self.past_around_release(-800, -60);
        let f = Fields::new()
            .with(
                "benefit",
                self.weighted(&[
                    ("universal_credit", 60),
                    ("jobseekers_allowance", 20),
                    ("employment_and_support_allowance", 15),
                    ("housing_benefit", 5),
                ]),
            )
            .with("ended_on", ended.to_string())
            .with("end_reason", "entered_custody");
        self.push(Category::FinanceAndId, "previous_benefit", ended, f);
    }

    fn jobcentre_appointment(&mut self) {
        let first = self.repeats == 0;
        let date = if first {
            self.around_release(1, 7)
        } else {
            self.around_release(8, 90)
        };
        let kind = if first {
            "new_claim_interview"
        } else {
            self.pick(&[
                "work_coach",
                "job_search_review",
                "work_capability_assessment",
            ])
        };
        let f = Fields::new()
            .with("date", date.to_string())
            .with("time", self.time_slot())
            .with(
                "jobcentre",
                self.pick(&[
                    "Leeds City Jobcentre",
                    "Leeds East Jobcentre",
                    "Leeds West Jobcentre",
                ]),
            )
            .with("kind", kind)
            .with("work_coach", self.staff_name());
        self.push(
            Category::EducationSkillsAndWork,
            "jobcentre_appointment",
            date,
            f,
        );
    }
}

/// Days from `from` to `to` (both after 1970).
fn day_diff(from: Date, to: Date) -> i64 {
    let secs = |d: Date| i64::try_from(d.start_timestamp().0).unwrap_or(0);
    (secs(to) - secs(from)) / 86_400
}

/// A record's fields under construction.
struct Fields(BTreeMap<String, String>);

impl Fields {
    fn new() -> Fields {
        Fields(BTreeMap::new())
    }

    fn with(mut self, name: &str, value: impl Into<String>) -> Fields {
        self.0.insert(name.to_owned(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::time::Instant;

    use throughgate_protocol::identifiers::normalise;
    use throughgate_protocol::record::valid_name;

    use super::*;
    use crate::agencies::demo_agencies;

    #[test]
    fn the_people_file_names_each_person_and_their_identifier_where_known() {
        let cfg = SynthConfig::new(11, 40, Date::parse("2026-03-02").unwrap());
        let pop = generate_population(&cfg);
        let mut out = Vec::new();
        write_people_csv(&pop, &mut out).unwrap();
        let mut r = csv::Reader::from_reader(out.as_slice());
        let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
        let mut want = vec!["index", "given_name", "family_name"];
        want.extend(demo_agencies().iter().map(|a| a.id));
        assert_eq!(header, want);
        let rows: Vec<csv::StringRecord> = r.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(rows.len(), pop.people.len());
        let mut known = 0;
        for (row, person) in rows.iter().zip(&pop.people) {
            assert_eq!(row.get(0), Some(person.index.to_string().as_str()));
            assert_eq!(row.get(1), Some(person.given_name));
            assert_eq!(row.get(2), Some(person.family_name));
            for (i, a) in demo_agencies().iter().enumerate() {
                let cell = row.get(3 + i).unwrap();
                if person.is_known_to(a) {
                    assert_eq!(cell, person.identifiers.get(a.scheme));
                    known += 1;
                } else {
                    assert_eq!(cell, "", "{} is not known to {}", person.index, a.id);
                }
            }
        }
        assert!(known > 0);
    }

    fn config(people: usize) -> SynthConfig {
        SynthConfig::new(42, people, Date::parse("2026-03-02").unwrap())
    }

    #[test]
    fn the_generator_makes_the_same_people_as_the_population() {
        let pop = generate_population(&config(300));
        let g = PersonGenerator::new(&config(0));
        for i in [0, 1, 150, 299] {
            let a = &pop.people[i];
            let b = g.person(i);
            assert_eq!((a.index, &a.identifiers), (b.index, &b.identifiers));
            assert_eq!(a.full_name(), b.full_name());
        }
    }

    #[test]
    fn identifiers_are_valid_and_unique_across_ten_thousand_people() {
        let pop = generate_population(&config(10_000));
        assert_eq!(pop.people.len(), 10_000);
        for scheme in IdScheme::ALL {
            let mut seen = HashSet::new();
            for p in &pop.people {
                let id = p.identifier(scheme);
                assert_eq!(
                    normalise(scheme, &id.value).as_deref(),
                    Ok(id.value.as_str()),
                    "{scheme} {}",
                    id.value
                );
                assert!(id.validate().is_ok());
                assert!(seen.insert(id.value), "duplicate {scheme}");
            }
        }
        // NI numbers are unique ignoring the suffix letter too.
        let stems: HashSet<_> = pop
            .people
            .iter()
            .map(|p| p.identifiers.ni_number[..8].to_owned())
            .collect();
        assert_eq!(stems.len(), 10_000);
        assert!(pop
            .people
            .iter()
            .all(|p| p.identifiers.nhs_number.starts_with('9')));
    }

    #[test]
    fn people_are_plausible() {
        let cfg = config(5_000);
        let pop = generate_population(&cfg);
        let today = cfg.reference_date;
        let mut known = HashMap::new();
        for p in &pop.people {
            assert!(p.date_of_birth <= today.add_days(-18 * 365));
            assert!(p.date_of_birth >= today.add_days(-71 * 365 - 18));
            assert!(p.release_date >= today.add_days(-60));
            assert!(p.release_date <= today.add_days(90));
            assert!(p.home_address.postcode.starts_with("LS"));
            assert_eq!(p.home_address.uprn.len(), 12);
            for a in demo_agencies() {
                *known.entry(a.id).or_insert(0usize) += usize::from(p.is_known_to(a));
            }
        }
        let share = |id: &str| known[id] as f64 / 5_000.0;
        assert_eq!(share("hmp-leeds"), 1.0);
        assert_eq!(share("probation-yorks"), 1.0);
        assert!((share("nhs-wy") - 0.9).abs() < 0.03);
        assert!((share("dwp") - 0.6).abs() < 0.03);
        assert!((share("leeds-college") - 0.4).abs() < 0.03);
        assert!((share("leeds-cc") - 0.5).abs() < 0.03);
    }

    #[test]
    fn generation_is_deterministic_and_prefix_stable() {
        let small = generate_population(&config(50));
        let large = generate_population(&config(500));
        assert_eq!(small, generate_population(&config(50)));
        assert_eq!(small.people[..], large.people[..50]);
        let other = generate_population(&SynthConfig {
            seed: 43,
            ..config(50)
        });
        assert_ne!(small, other);
        for a in demo_agencies() {
            let r1 = records_for(a.id, &small, &config(50)).unwrap();
            let r2 = records_for(a.id, &small, &config(50)).unwrap();
            assert_eq!(r1, r2);
            let streamed: Vec<_> = records_iter(a.id, &small, &config(50)).unwrap().collect();
            assert_eq!(r1, streamed);
        }
    }

    #[test]
    fn every_record_validates_and_belongs_to_its_agency() {
        let cfg = config(2_000);
        let pop = generate_population(&cfg);
        for a in demo_agencies() {
            let records = records_for(a.id, &pop, &cfg).unwrap();
            let holders = pop.known_to(a).count();
            assert!(!records.is_empty());
            let per_person = records.len() as f64 / holders as f64;
            assert!((per_person - 5.0).abs() < 0.5, "{}: {per_person}", a.id);
            let mut ids = HashSet::new();
            let mut kinds = HashSet::new();
            for r in &records {
                r.validate().unwrap();
                assert!(ids.insert(r.record_id.clone()));
                assert!(a.holds(r.category), "{} {}", a.id, r.kind);
                assert_eq!(normalise(a.scheme, &r.subject).unwrap(), r.subject);
                assert_eq!(r.source_system, a.source_system);
                assert!(r.fields.keys().all(|k| valid_name(k)));
                assert!(r.fields.values().all(|v| !v.is_empty()));
                assert!(r.recorded_at.date() <= cfg.reference_date);
                kinds.insert(r.kind.clone());
            }
            assert!(kinds.len() >= 3, "{}: {kinds:?}", a.id);
        }
    }

    #[test]
    fn records_reflect_the_person() {
        let cfg = config(200);
        let pop = generate_population(&cfg);
        let prison = records_for("hmp-leeds", &pop, &cfg).unwrap();
        let p = &pop.people[7];
        let identity = prison
            .iter()
            .find(|r| r.kind == "person_identity" && r.subject == p.identifiers.noms_number)
            .unwrap();
        assert_eq!(identity.fields["given_name"], p.given_name);
        assert_eq!(identity.fields["release_date"], p.release_date.to_string());
        assert_eq!(
            pop.find(&p.identifier(IdScheme::NomsNumber)).unwrap().index,
            7
        );
        let probation = records_for("probation-yorks", &pop, &cfg).unwrap();
        for r in probation.iter().filter(|r| r.kind == "offender_manager") {
            assert!(r.fields["phone"].starts_with("01632 960"));
        }
        assert!(probation.iter().any(|r| r.category == Category::Risk));
        assert!(matches!(
            records_for("nowhere", &pop, &cfg),
            Err(SynthError::UnknownAgency(_))
        ));
    }

    #[test]
    fn record_count_follows_the_config() {
        let mut cfg = config(100);
        cfg.records_per_person = 0;
        let pop = generate_population(&cfg);
        assert!(records_for("dwp", &pop, &cfg).unwrap().is_empty());
        cfg.records_per_person = 12;
        let n = records_for("hmp-leeds", &pop, &cfg).unwrap().len();
        assert!((1100..=1300).contains(&n), "{n}");
    }

    /// Run with `cargo test --release -p throughgate-node --lib -- --ignored --nocapture million`.
    #[test]
    #[ignore = "timing; run in release mode"]
    fn million_records_for_one_holder() {
        let cfg = config(200_000);
        let start = Instant::now();
        let pop = generate_population(&cfg);
        let people_time = start.elapsed();
        let start = Instant::now();
        let n = records_iter("hmp-leeds", &pop, &cfg).unwrap().count();
        let records_time = start.elapsed();
        println!("200000 people in {people_time:?}; {n} prison records in {records_time:?}");
        assert!(n >= 950_000);
    }
}
