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
        image: "a.png".into(),
        question: "Which shape is it?".into(),
        expected: Expected::Choice {
            choices: vec!["circle".into(), "square".into()],
            right: 'A',
        },
        category: None,
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
}
