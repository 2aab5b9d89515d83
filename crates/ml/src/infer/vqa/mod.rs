//! Visual question answering as the benchmarks score it: read a question file (`questions`), ask
//! a VLM every question about its image with greedy decoding in batches, and score each answer
//! the way its benchmark does (`scoring`): overall, per category, POPE's yes/no measures, and a
//! confusion matrix of option letters for multiple choice (`charts` draws them).

pub mod charts;
pub mod mmstar_parquet;
pub mod questions;
pub mod scoring;

use candle_core::{Device, Result, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

use super::generate::{Prompt, SamplingConfig, generate};
use crate::data::chat::ChatTemplate;
use crate::data::chat::Tokenized;
use crate::data::image::{decode_normalized, load_normalized};
use crate::data::tokenizer::Tokenizer;
use crate::models::vlm::Vlm;
use questions::{Expected, ImageSource, Question};
use scoring::{
    YesNo, chosen_letter, exact_match, letter, mmstar_letter, pope_says_yes, vqa_accuracy,
};

/// A VLM ready to answer: the model, its tokenizer, chat template and the tokens that end a reply.
pub struct Answerer<'a> {
    pub model: &'a Vlm,
    pub tokenizer: &'a Tokenizer,
    pub template: &'a ChatTemplate,
    pub stop_tokens: Vec<u32>,
}

/// How the questions are asked.
#[derive(Clone, Debug)]
pub struct Asking {
    pub max_new_tokens: usize,
    pub batch_size: usize,
    /// Appended (after a newline) to an open-ended or yes/no question; empty for none.
    pub open_prompt: String,
    /// Appended after a multiple-choice question's options.
    pub choice_prompt: String,
}

/// lmms-eval's instruction for MMStar and MMBench.
pub const CHOICE_PROMPT: &str = "Answer with the option's letter from the given choices directly.";

/// One question as asked and answered.
#[derive(Clone, Debug, Serialize)]
pub struct Answered {
    pub place: String,
    pub image: String,
    pub question: String,
    /// The right answer as written (`red`, `B`, `yes`, or the humans' answers joined by `|`).
    pub expected: String,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    /// None when the image could not be read (the question was skipped).
    pub answer: Option<String>,
    pub score: f64,
    /// Why the question was skipped.
    pub skipped: Option<String>,
}

/// The scores of a question file.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Mean score over the questions asked.
    pub score: f64,
    pub asked: usize,
    /// Questions whose image could not be read.
    pub skipped: usize,
    /// Category → (score, questions asked). The score is the mean over its questions, or, when
    /// they have subcategories, the mean of its subcategories' means (as MMStar aggregates).
    pub per_category: BTreeMap<String, (f64, usize)>,
    /// Subcategory → (mean score, questions asked).
    pub per_subcategory: BTreeMap<String, (f64, usize)>,
    /// The mean of the subcategories' means, when there are subcategories (MMStar's "average").
    pub subcategory_average: Option<f64>,
    /// POPE's counts, when the file has yes/no questions.
    pub yes_no: Option<YesNo>,
    /// Multiple choice: right letter → chosen letter (`?` for none of them) → count.
    pub confusion: BTreeMap<char, BTreeMap<char, usize>>,
    pub answers: Vec<Answered>,
}

/// Ask every question and score the answers. `on_progress(done, total)` after each batch.
pub fn evaluate(
    who: &Answerer<'_>,
    questions: &[Question],
    asking: &Asking,
    device: &Device,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<Report> {
    let size = who.model.cfg.vision.image_size;
    let mut answers: Vec<Option<String>> = vec![None; questions.len()];
    let mut skipped: Vec<Option<String>> = vec![None; questions.len()];
    let mut prompts = Vec::with_capacity(questions.len());
    for q in questions {
        let text = prompt_text(q, asking);
        prompts.push(who.template.prompt(who.tokenizer, &[], &text, true)?);
    }
    // Similar lengths together: a batch is left-padded to its longest prompt.
    let mut order: Vec<usize> = (0..questions.len()).collect();
    order.sort_by_key(|&i| prompts[i].ids.len());
    let sampling = SamplingConfig {
        max_new_tokens: asking.max_new_tokens,
        stop_tokens: who.stop_tokens.clone(),
        ..SamplingConfig::default()
    };
    let mut done = 0;
    for chunk in order.chunks(asking.batch_size.max(1)) {
        let mut pixels = Vec::new();
        let mut asked = Vec::new();
        for &i in chunk {
            let pixels_of = match &questions[i].image {
                ImageSource::File(path) => load_normalized(path, size as u32),
                ImageSource::Embedded(bytes) => {
                    decode_normalized(bytes, Path::new(&questions[i].place), size as u32)
                }
            };
            match pixels_of {
                Ok(image) => {
                    pixels.extend(image);
                    asked.push(i);
                }
                Err(e) => skipped[i] = Some(e.to_string()),
            }
        }
        if !asked.is_empty() {
            let rows = embed_rows(
                who,
                &asked.iter().map(|&i| &prompts[i]).collect::<Vec<_>>(),
                pixels,
                device,
            )?;
            let out = generate(&who.model.lm, Prompt::Embeds(&rows), &sampling, |_, _| {})?;
            for (&i, tokens) in asked.iter().zip(&out.tokens) {
                answers[i] = Some(who.tokenizer.decode(tokens)?);
            }
        }
        done += chunk.len();
        on_progress(done, questions.len());
    }
    Ok(score(questions, answers, skipped))
}

/// The question as the model reads it: multiple-choice options listed with their letters.
pub fn prompt_text(q: &Question, asking: &Asking) -> String {
    let mut text = q.question.clone();
    let add = |text: &mut String, line: &str| {
        if !line.is_empty() {
            text.push('\n');
            text.push_str(line);
        }
    };
    match &q.expected {
        Expected::Choice { choices, .. } => {
            for (i, choice) in choices.iter().enumerate() {
                add(&mut text, &format!("{}. {choice}", letter(i)));
            }
            add(&mut text, &asking.choice_prompt);
        }
        Expected::Letter(_) => {
            // As lmms-eval asks MMStar: the question as written, then the instruction.
            text = text.trim().to_string();
            add(&mut text, &asking.choice_prompt);
        }
        _ => add(&mut text, &asking.open_prompt),
    }
    text
}

/// Each prompt's input embeddings with its image spliced in, `(T_i, C)`: the images go through
/// the vision tower as one batch, the prompts right-padded to a common length and cut back.
fn embed_rows(
    who: &Answerer<'_>,
    prompts: &[&Tokenized],
    pixels: Vec<f32>,
    device: &Device,
) -> Result<Vec<Tensor>> {
    let at = prompts[0].image_at.expect("the prompt carries the image");
    if prompts.iter().any(|p| p.image_at != Some(at)) {
        candle_core::bail!("vqa: the chat template put the image at different places");
    }
    let size = who.model.cfg.vision.image_size;
    let longest = prompts.iter().map(|p| p.ids.len()).max().unwrap_or(0);
    let pad = who.tokenizer.pad_id();
    let ids: Vec<u32> = prompts
        .iter()
        .flat_map(|p| {
            p.ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(pad, longest - p.ids.len()))
        })
        .collect();
    let n = prompts.len();
    let ids = Tensor::from_vec(ids, (n, longest), device)?;
    let images = Tensor::from_vec(pixels, (n, 3, size, size), device)?;
    let embeds = who.model.embed(&ids, Some((&images, at)))?;
    prompts
        .iter()
        .enumerate()
        .map(|(row, p)| embeds.get(row)?.narrow(0, 0, p.ids.len()))
        .collect()
}

fn score(
    questions: &[Question],
    answers: Vec<Option<String>>,
    skipped: Vec<Option<String>>,
) -> Report {
    let mut groups = Groups::new();
    let mut yes_no: Option<YesNo> = None;
    let mut confusion: BTreeMap<char, BTreeMap<char, usize>> = BTreeMap::new();
    let (mut total, mut asked) = (0.0, 0);
    let mut out = Vec::with_capacity(questions.len());
    for ((q, answer), skipped) in questions.iter().zip(answers).zip(skipped) {
        let score = match &answer {
            None => 0.0,
            Some(said) => match &q.expected {
                Expected::Answer(right) => exact_match(said, right),
                Expected::Humans(humans) => vqa_accuracy(said, humans),
                Expected::Choice { choices, right } => {
                    let chosen = chosen_letter(said, choices);
                    *confusion
                        .entry(*right)
                        .or_default()
                        .entry(chosen.unwrap_or('?'))
                        .or_default() += 1;
                    f64::from(chosen == Some(*right))
                }
                Expected::Letter(right) => {
                    let chosen = mmstar_letter(said);
                    *confusion
                        .entry(*right)
                        .or_default()
                        .entry(chosen.unwrap_or('?'))
                        .or_default() += 1;
                    f64::from(chosen == Some(*right))
                }
                Expected::YesNo(truth) => {
                    let yes = pope_says_yes(said);
                    yes_no.get_or_insert_default().add(yes, *truth);
                    f64::from(yes == *truth)
                }
            },
        };
        if answer.is_some() {
            total += score;
            asked += 1;
            let group = groups
                .entry((q.category.clone(), q.subcategory.clone()))
                .or_default();
            group.0 += score;
            group.1 += 1;
        }
        out.push(Answered {
            place: q.place.clone(),
            image: match &q.image {
                ImageSource::File(path) => path.display().to_string(),
                ImageSource::Embedded(_) => format!("(in {})", q.place),
            },
            question: q.question.clone(),
            expected: expected_text(&q.expected),
            category: q.category.clone(),
            subcategory: q.subcategory.clone(),
            answer,
            score,
            skipped,
        });
    }
    let (per_category, per_subcategory, subcategory_average) = aggregate(&groups);
    Report {
        score: if asked == 0 {
            0.0
        } else {
            total / asked as f64
        },
        asked,
        skipped: questions.len() - asked,
        per_category,
        per_subcategory,
        subcategory_average,
        yes_no,
        confusion,
        answers: out,
    }
}

type Scores = BTreeMap<String, (f64, usize)>;

/// (category, subcategory) → (sum of scores, questions).
type Groups = BTreeMap<(Option<String>, Option<String>), (f64, usize)>;

/// Per category, per subcategory and the subcategories' average, from the (category,
/// subcategory) groups' sums: a category is the mean of its groups' means (its plain mean when it
/// has no subcategories, as it then has one group).
fn aggregate(groups: &Groups) -> (Scores, Scores, Option<f64>) {
    let mut per_category: BTreeMap<String, (Vec<f64>, usize)> = BTreeMap::new();
    let mut per_subcategory = Scores::new();
    for ((category, subcategory), &(sum, n)) in groups {
        let mean = sum / n as f64;
        if let Some(category) = category {
            let entry = per_category.entry(category.clone()).or_default();
            entry.0.push(mean);
            entry.1 += n;
        }
        if let Some(sub) = subcategory {
            let entry = per_subcategory.entry(sub.clone()).or_default();
            // The same subcategory under two categories: weigh by questions.
            *entry = (
                (entry.0 * entry.1 as f64 + sum) / (entry.1 + n) as f64,
                entry.1 + n,
            );
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let per_category = per_category
        .into_iter()
        .map(|(c, (means, n))| (c, (mean(&means), n)))
        .collect();
    let means: Vec<f64> = per_subcategory.values().map(|&(m, _)| m).collect();
    let average = (!means.is_empty()).then(|| mean(&means));
    (per_category, per_subcategory, average)
}

fn expected_text(expected: &Expected) -> String {
    match expected {
        Expected::Answer(a) => a.clone(),
        Expected::Humans(humans) => humans.join("|"),
        Expected::Choice { right, .. } | Expected::Letter(right) => right.to_string(),
        Expected::YesNo(yes) => if *yes { "yes" } else { "no" }.to_string(),
    }
}

#[cfg(test)]
mod tests;
