//! How a VQA answer is scored, as the benchmarks' own evaluators do it: VQA's answer normalisation
//! (punctuation, articles, number words, contractions) and its ten-annotator accuracy; the
//! option letter of a multiple-choice answer (as lmms-eval reads MMStar and MMBench answers); and
//! POPE's yes/no reading with its precision, recall, F1 and yes-ratio.

/// Punctuation the VQA evaluator removes or turns into a space.
const PUNCTUATION: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

const NUMBER_WORDS: [(&str, &str); 11] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
];

const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// The contractions VQA's evaluator restores most often (its table is longer; these cover the
/// answers a model gives to "is/are/does" questions).
const CONTRACTIONS: [(&str, &str); 16] = [
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldnt", "couldn't"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("isnt", "isn't"),
    ("shouldnt", "shouldn't"),
    ("thats", "that's"),
    ("wasnt", "wasn't"),
    ("werent", "weren't"),
    ("whats", "what's"),
    ("wont", "won't"),
    ("wouldnt", "wouldn't"),
];

/// An answer as VQA's evaluator compares it: `"Two dogs."` → `"2 dogs"`, `"the red one"` → `"red 1"`.
pub fn normalize_vqa(answer: &str) -> String {
    let text = answer.replace(['\n', '\t'], " ");
    let text = text.trim();
    // A punctuation mark next to a space, or a comma between digits anywhere, is removed; else
    // it becomes a space ("black/white" → "black white").
    let digit_comma = text
        .as_bytes()
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == b',' && w[2].is_ascii_digit());
    let mut out = text.to_string();
    for p in PUNCTUATION {
        let spaced = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        out = out.replace(p, if spaced || digit_comma { "" } else { " " });
    }
    // A full stop goes unless a digit follows it ("2.5" stays).
    let chars: Vec<char> = out.chars().collect();
    let out: String = chars
        .iter()
        .enumerate()
        .filter(|&(i, &c)| c != '.' || chars.get(i + 1).is_some_and(|n| n.is_ascii_digit()))
        .map(|(_, &c)| c)
        .collect();
    let words: Vec<String> = out
        .to_lowercase()
        .split_whitespace()
        .map(|w| {
            let w = NUMBER_WORDS
                .iter()
                .find(|(word, _)| *word == w)
                .map_or(w, |(_, digit)| digit);
            CONTRACTIONS
                .iter()
                .find(|(plain, _)| *plain == w)
                .map_or(w, |(_, full)| full)
                .to_string()
        })
        .filter(|w| !ARTICLES.contains(&w.as_str()))
        .collect();
    words.join(" ")
}

/// Open-ended: 1 when the normalised answers are equal.
pub fn exact_match(answer: &str, expected: &str) -> f64 {
    f64::from(normalize_vqa(answer) == normalize_vqa(expected))
}

/// VQAv2's accuracy against its human answers: for each annotator left out in turn, min(1, the
/// others that gave this answer / 3), averaged — min(#matches/3, 1) up to that averaging.
pub fn vqa_accuracy(answer: &str, humans: &[String]) -> f64 {
    if humans.is_empty() {
        return 0.0;
    }
    let answer = normalize_vqa(answer);
    let same: Vec<bool> = humans.iter().map(|h| normalize_vqa(h) == answer).collect();
    let matches = same.iter().filter(|&&s| s).count();
    let total: f64 = same
        .iter()
        .map(|&this| ((matches - usize::from(this)) as f64 / 3.0).min(1.0))
        .sum();
    total / humans.len() as f64
}

/// The option letter a multiple-choice answer picks among `choices` (A, B, …): its first letter
/// (after "(", "option " or "the answer is "), else the choice its text equals. None when it
/// picks none of them.
pub fn chosen_letter(answer: &str, choices: &[String]) -> Option<char> {
    let letters: Vec<char> = (0..choices.len()).map(letter).collect();
    let text = answer.trim().replace('\n', " ");
    let lower = text.to_lowercase();
    let rest = ["(", "option ", "the answer is "]
        .iter()
        .find_map(|prefix| lower.strip_prefix(prefix))
        .unwrap_or(&lower);
    let mut chars = rest.chars();
    if let Some(first) = chars.next().map(|c| c.to_ascii_uppercase())
        && letters.contains(&first)
        && chars.next().is_none_or(|c| !c.is_alphanumeric())
    {
        return Some(first);
    }
    let said = normalize_vqa(&text);
    choices
        .iter()
        .position(|c| normalize_vqa(c) == said)
        .map(letter)
}

/// The letter an answer gives as MMStar's own scorer (and lmms-eval's copy of it) reads it: the
/// first character, or the one after "(", "option " or "the answer is " (case ignored). Unlike
/// [`chosen_letter`] it looks no further: "A cat" reads as A, as it does there.
pub fn mmstar_letter(answer: &str) -> Option<char> {
    let lower = answer.trim().replace('\n', " ").to_lowercase();
    let rest = ["(", "option ", "the answer is "]
        .iter()
        .find_map(|prefix| lower.strip_prefix(prefix))
        .unwrap_or(&lower);
    rest.chars()
        .next()
        .filter(char::is_ascii_lowercase)
        .map(|c| c.to_ascii_uppercase())
}

/// The letter of option `i`: 0 → 'A'.
pub fn letter(i: usize) -> char {
    (b'A' + i as u8) as char
}

/// POPE's reading of a yes/no answer: the first sentence, "no" if it says no or not, else "yes".
pub fn pope_says_yes(answer: &str) -> bool {
    let first = answer.split('.').next().unwrap_or("").replace(',', "");
    !first
        .split_whitespace()
        .any(|w| matches!(w, "No" | "no" | "not" | "NO"))
}

/// POPE's counts: the positive class is "yes".
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct YesNo {
    pub true_yes: usize,
    pub false_yes: usize,
    pub true_no: usize,
    pub false_no: usize,
}

impl YesNo {
    pub fn add(&mut self, said_yes: bool, truth_yes: bool) {
        match (said_yes, truth_yes) {
            (true, true) => self.true_yes += 1,
            (true, false) => self.false_yes += 1,
            (false, false) => self.true_no += 1,
            (false, true) => self.false_no += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.true_yes + self.false_yes + self.true_no + self.false_no
    }

    /// (accuracy, precision, recall, F1, yes-ratio) as POPE reports them.
    pub fn report(&self) -> [(&'static str, f64); 5] {
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = ratio(self.true_yes, self.true_yes + self.false_yes);
        let recall = ratio(self.true_yes, self.true_yes + self.false_no);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        [
            (
                "accuracy",
                ratio(self.true_yes + self.true_no, self.total()),
            ),
            ("precision", precision),
            ("recall", recall),
            ("f1", f1),
            (
                "yes_ratio",
                ratio(self.true_yes + self.false_yes, self.total()),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmstar_reads_the_first_letter_as_its_scorer_does() {
        for (said, letter) in [
            ("B", Some('B')),
            ("b. green", Some('B')),
            ("(c)", Some('C')),
            ("Option D", Some('D')),
            ("The answer is a", Some('A')),
            ("A cat", Some('A')),
            ("  \nC", Some('C')),
            ("", None),
            ("42", None),
        ] {
            assert_eq!(mmstar_letter(said), letter, "{said:?}");
        }
    }

    #[test]
    fn answers_normalise_as_vqa_evaluates_them() {
        assert_eq!(normalize_vqa("Two dogs."), "2 dogs");
        assert_eq!(normalize_vqa("The red one"), "red 1");
        assert_eq!(normalize_vqa("black/white"), "black white");
        assert_eq!(normalize_vqa("yes, it is"), "yes it is");
        assert_eq!(normalize_vqa("1,000"), "1000");
        assert_eq!(normalize_vqa("2.5 m"), "2.5 m");
        assert_eq!(normalize_vqa("  Dont\tknow "), "don't know");
        assert_eq!(exact_match("A circle.", "circle"), 1.0);
        assert_eq!(exact_match("square", "circle"), 0.0);
    }

    #[test]
    fn vqa_accuracy_averages_over_left_out_annotators() {
        let humans = |answers: &[&str]| answers.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ten_red = humans(&["red"; 10]);
        assert_eq!(vqa_accuracy("Red.", &ten_red), 1.0);
        // Three of ten said "red": 7 annotators see 3 matches (1.0), 3 see 2 (2/3).
        let three = humans(&[
            "red", "red", "red", "blue", "blue", "blue", "blue", "blue", "blue", "blue",
        ]);
        let expected = (7.0 * 1.0 + 3.0 * (2.0 / 3.0)) / 10.0;
        assert!((vqa_accuracy("red", &three) - expected).abs() < 1e-12);
        // One of ten: 9 see one match (1/3), the one sees none.
        let one = humans(&[
            "red", "blue", "blue", "blue", "blue", "blue", "blue", "blue", "blue", "blue",
        ]);
        assert!((vqa_accuracy("red", &one) - 0.3).abs() < 1e-12);
        assert_eq!(vqa_accuracy("green", &three), 0.0);
    }

    #[test]
    fn the_letter_of_a_multiple_choice_answer() {
        let choices: Vec<String> = ["a circle", "a square", "a triangle"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(chosen_letter("B", &choices), Some('B'));
        assert_eq!(chosen_letter("b.", &choices), Some('B'));
        assert_eq!(chosen_letter("(C) a triangle", &choices), Some('C'));
        assert_eq!(chosen_letter("The answer is A", &choices), Some('A'));
        assert_eq!(chosen_letter("square", &choices), Some('B'));
        assert_eq!(chosen_letter("D", &choices), None);
        assert_eq!(chosen_letter("Because", &choices), None);
        assert_eq!(chosen_letter("", &choices), None);
    }

    #[test]
    fn pope_reads_yes_and_no_and_reports_its_measures() {
        assert!(pope_says_yes("Yes, there is a dog."));
        assert!(!pope_says_yes("No, there is not."));
        assert!(!pope_says_yes("There is not a dog in the image."));
        assert!(pope_says_yes("There is a dog. No cat."));
        let mut counts = YesNo::default();
        for (said, truth) in [
            (true, true),
            (true, false),
            (false, false),
            (false, true),
            (true, true),
        ] {
            counts.add(said, truth);
        }
        let report = counts.report();
        assert_eq!(report[0], ("accuracy", 3.0 / 5.0));
        assert_eq!(report[1], ("precision", 2.0 / 3.0));
        assert_eq!(report[2], ("recall", 2.0 / 3.0));
        assert!((report[3].1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(report[4], ("yes_ratio", 3.0 / 5.0));
    }
}
