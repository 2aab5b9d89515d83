//! A tiny random VLM answering a question file: every question answered or skipped in file order,
//! the same answers whatever the batch size, and scores that follow from the answers.

use candle_core::Device;
use image::{Rgb, RgbImage};

use super::*;
use crate::infer::bundle::tests::tiny_bundle;

#[test]
fn answers_come_back_in_order_whatever_the_batch_and_unreadable_images_are_skipped() -> Result<()> {
    let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
    let (_, model, _, tokenizer, template) = tiny_bundle(dir.path())?;
    for (name, colour) in [("red.png", [200, 0, 0]), ("blue.png", [0, 0, 200])] {
        RgbImage::from_pixel(24, 20, Rgb(colour))
            .save(dir.path().join(name))
            .map_err(candle_core::Error::wrap)?;
    }
    std::fs::write(dir.path().join("broken.png"), b"not a png")
        .map_err(candle_core::Error::wrap)?;
    let lines = [
        r#"{"image": "red.png", "question": "What colour?", "answer": "red", "category": "colour"}"#,
        r#"{"image": "broken.png", "question": "What colour?", "answer": "red", "category": "colour"}"#,
        r#"{"image": "blue.png", "question": "Which?", "choices": ["red", "blue"], "answer": "B"}"#,
        r#"{"image": "blue.png", "text": "Is it red?", "label": "no"}"#,
        r#"{"image": "red.png", "question": "What colour is the circle in the picture?", "answers": ["red", "red", "red"], "category": "colour"}"#,
    ];
    let file = dir.path().join("q.jsonl");
    std::fs::write(&file, lines.join("\n")).map_err(candle_core::Error::wrap)?;
    let questions = questions::read(&file, None).map_err(candle_core::Error::Msg)?;
    let who = Answerer {
        model: &model,
        tokenizer: &tokenizer,
        template: &template,
        stop_tokens: vec![template.im_end],
    };
    let asking = |batch_size| Asking {
        max_new_tokens: 4,
        batch_size,
        open_prompt: String::new(),
        choice_prompt: CHOICE_PROMPT.into(),
    };
    let mut progress = Vec::new();
    let one = evaluate(&who, &questions, &asking(1), &Device::Cpu, |d, t| {
        progress.push((d, t))
    })?;
    let all = evaluate(&who, &questions, &asking(8), &Device::Cpu, |_, _| {})?;
    assert_eq!(progress.last(), Some(&(5, 5)));
    assert_eq!(progress.len(), 5);
    let said = |r: &Report| {
        r.answers
            .iter()
            .map(|a| a.answer.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(said(&one), said(&all), "batching changes no answer");

    assert_eq!((all.asked, all.skipped), (4, 1));
    assert_eq!(all.answers[1].answer, None);
    assert!(all.answers[1].skipped.is_some());
    assert_eq!(all.answers[2].place, "q.jsonl:3");
    // The scores are those of the answers given.
    let expected = [
        scoring::exact_match(all.answers[0].answer.as_deref().unwrap(), "red"),
        f64::from(
            scoring::chosen_letter(
                all.answers[2].answer.as_deref().unwrap(),
                &["red".into(), "blue".into()],
            ) == Some('B'),
        ),
        f64::from(!scoring::pope_says_yes(
            all.answers[3].answer.as_deref().unwrap(),
        )),
        scoring::vqa_accuracy(
            all.answers[4].answer.as_deref().unwrap(),
            &["red".into(), "red".into(), "red".into()],
        ),
    ];
    assert!((all.score - expected.iter().sum::<f64>() / 4.0).abs() < 1e-12);
    assert_eq!(all.per_category["colour"].1, 2);
    assert_eq!(all.yes_no.map(|y| y.total()), Some(1));
    assert_eq!(all.confusion[&'B'].values().sum::<usize>(), 1);
    Ok(())
}

#[test]
fn a_multiple_choice_question_lists_its_options_by_letter() {
    let q = Question {
        place: "q.jsonl:1".into(),
        image: ImageSource::File("a.png".into()),
        question: "Which shape is it?".into(),
        expected: Expected::Choice {
            choices: vec!["circle".into(), "square".into()],
            right: 'A',
        },
        category: None,
        subcategory: None,
    };
    let asking = Asking {
        max_new_tokens: 4,
        batch_size: 1,
        open_prompt: "Answer in one word.".into(),
        choice_prompt: CHOICE_PROMPT.into(),
    };
    assert_eq!(
        prompt_text(&q, &asking),
        "Which shape is it?\nA. circle\nB. square\nAnswer with the option's letter from the given choices directly."
    );
    // MMStar's question already lists its options: it is asked as written.
    let mmstar = Question {
        question: "Which shape?\nOptions: A: circle, B: square\n".into(),
        expected: Expected::Letter('B'),
        ..q
    };
    assert_eq!(
        prompt_text(&mmstar, &asking),
        "Which shape?\nOptions: A: circle, B: square\nAnswer with the option's letter from the given choices directly."
    );
}

/// MMStar's parquet answered: images decoded from the file, the undecodable row skipped and
/// counted, and categories scored as MMStar aggregates them (the mean of their subcategories).
#[test]
fn mmstar_parquet_is_answered_and_aggregated_by_subcategory() -> Result<()> {
    let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
    let (_, model, _, tokenizer, template) = tiny_bundle(dir.path())?;
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/mmstar/mmstar_sample.parquet");
    let questions = questions::read(&file, None).map_err(candle_core::Error::Msg)?;
    let who = Answerer {
        model: &model,
        tokenizer: &tokenizer,
        template: &template,
        stop_tokens: vec![template.im_end],
    };
    let asking = Asking {
        max_new_tokens: 3,
        batch_size: 4,
        open_prompt: String::new(),
        choice_prompt: CHOICE_PROMPT.into(),
    };
    let report = evaluate(&who, &questions, &asking, &Device::Cpu, |_, _| {})?;
    assert_eq!((report.asked, report.skipped), (7, 1));
    assert_eq!(report.answers[5].answer, None);
    assert_eq!(report.answers[5].image, "(in mmstar_sample.parquet row 6)");
    assert_eq!(
        report
            .confusion
            .values()
            .flat_map(|m| m.values())
            .sum::<usize>(),
        7
    );
    for a in report.answers.iter().filter(|a| a.answer.is_some()) {
        let read = scoring::mmstar_letter(a.answer.as_deref().unwrap());
        assert_eq!(
            a.score,
            f64::from(read.map(String::from) == Some(a.expected.clone()))
        );
    }
    // Four subcategories, two per category.
    assert_eq!(report.per_subcategory.len(), 4);
    let sub = |name: &str| report.per_subcategory[name].0;
    let coarse = (sub("image scene and topic") + sub("image style & quality")) / 2.0;
    assert!((report.per_category["coarse perception"].0 - coarse).abs() < 1e-12);
    let all: f64 = report.per_subcategory.values().map(|s| s.0).sum::<f64>() / 4.0;
    assert!((report.subcategory_average.unwrap() - all).abs() < 1e-12);
    Ok(())
}

#[test]
fn a_category_without_subcategories_is_its_plain_mean() {
    let key = |c: &str, s: Option<&str>| (Some(c.to_string()), s.map(str::to_string));
    let groups = BTreeMap::from([
        (key("colour", None), (3.0, 4)),
        (key("math", Some("geometry")), (1.0, 1)),
        (key("math", Some("counting")), (0.0, 3)),
    ]);
    let (per_category, per_subcategory, average) = aggregate(&groups);
    assert_eq!(per_category["colour"], (0.75, 4));
    // Not 1/4 (the plain mean): each subcategory counts once.
    assert_eq!(per_category["math"], (0.5, 4));
    assert_eq!(per_subcategory.len(), 2);
    assert_eq!(average, Some(0.5));
}
