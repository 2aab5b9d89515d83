//! The Stagefile's top level: `executor`, `[remote]`, `[resources]`, `[slurm]` and the `[stages.*]`
//! entries, handed on in the order they were written.

use std::collections::BTreeMap;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Entry, Loader, TOP_KEYS};
use crate::diagnostic::did_you_mean;

impl Loader<'_> {
    /// `[remote] url = "s3://bucket/prefix"`: where the shared cache is. Credentials stay out of
    /// the Stagefile (it is committed): they come from the environment.
    fn remote_table(&mut self, value: &Spanned<DeValue<'_>>) {
        let help = "write [remote] with url = \"s3://bucket/prefix\" or \"file:///shared/path\"";
        let Some(table) = value.get_ref().as_table() else {
            return self.error(value.span(), "`remote` must be a table", help);
        };
        for (key, v) in table.iter() {
            match (key.get_ref().as_ref(), v.get_ref().as_str()) {
                ("url", Some(url)) if url.contains('@') => self.error(
                    v.span(),
                    "the remote's url holds credentials",
                    "keep credentials out of the Stagefile: set AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY (or your provider's variables) in the environment",
                ),
                ("url", Some(url)) => self.remote = Some(url.to_string()),
                ("url", None) => self.error(v.span(), "`url` must be a string", help),
                (other, _) => self.error(
                    key.span(),
                    format!("unknown key `{other}` in [remote]"),
                    help,
                ),
            }
        }
    }

    /// The `[resources]` capacities and the stage entries in Stagefile order.
    pub(super) fn top_level<'d>(
        &mut self,
        doc: &'d DeTable<'d>,
    ) -> (BTreeMap<String, u32>, Vec<Entry<'d>>) {
        let mut capacities = BTreeMap::new();
        let mut stages = Vec::new();
        for (key, value) in doc.iter() {
            match key.get_ref().as_ref() {
                "remote" => self.remote_table(value),
                "executor" => self.default_executor = self.executor(value),
                "slurm" => self.slurm_defaults = self.slurm_table(value),
                "resources" => {
                    let declared = self.resource_table(value);
                    capacities.extend(declared.into_iter().map(|(name, n, _)| (name, n)));
                }
                "stages" => match value.get_ref().as_table() {
                    Some(table) => stages.extend(table.iter()),
                    None => self.error(
                        value.span(),
                        "`stages` must be a table of stages",
                        "declare each stage as [stages.<name>] followed by its keys",
                    ),
                },
                other => {
                    let help = match did_you_mean(other, TOP_KEYS) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => {
                            "a Stagefile holds `executor`, and `[remote]`, `[resources]`, `[slurm]` and \
                             `[stages.<name>]` tables"
                                .into()
                        }
                    };
                    self.error(key.span(), format!("unknown top-level key `{other}`"), help);
                }
            }
        }
        // The parser keeps keys sorted; the spans give back the order they were written in.
        stages.sort_by_key(|(key, _)| key.span().start);
        (capacities, stages)
    }
}
