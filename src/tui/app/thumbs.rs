//! What `App` does for the single-answer review (`screens::thumbs`): opening it on the
//! selected prompt (reading its answers and my ratings), storing a rating and taking the last
//! one back.

use std::collections::HashMap;

use super::App;
use crate::store::{ActiveThumb, NewThumb, Store};
use crate::tui::queue;
use crate::tui::screens::Screen;
use crate::tui::screens::thumbs::ThumbsView;

impl App {
    /// Whether the selected prompt has exactly one candidate (nothing to compare it with).
    pub(super) fn selected_has_one_candidate(&mut self) -> anyhow::Result<bool> {
        let Some(&index) = self.queue.visible.get(self.queue.selected) else { return Ok(false) };
        self.ensure_loaded(index)?;
        Ok(self.queue.items[index].candidates.len() == 1)
    }

    /// The single-answer review of the selected prompt.
    pub(super) fn open_thumbs(&mut self) -> anyhow::Result<()> {
        let Some(&index) = self.queue.visible.get(self.queue.selected) else { return Ok(()) };
        self.ensure_loaded(index)?;
        let prompt_id = self.queue.items[index].row.prompt_id;
        let view = read_view(&self.store, prompt_id, self.annotator_id)?;
        self.screens.push(Screen::Thumbs(Box::new(view)));
        self.store.set_cursor(self.annotator_id, prompt_id)?;
        Ok(())
    }

    /// Stores a rating (committed before the next answer shows).
    pub(super) fn rate(&mut self, thumb: NewThumb) -> anyhow::Result<()> {
        self.store.record_thumb(&thumb)?;
        self.seconds_today = self.store.seconds_today(self.annotator_id)?;
        self.message = format!("answer {} rated {}", thumb.response_id, thumb.rating.as_str());
        self.reload_queue_item()?;
        if let Some(Screen::Thumbs(view)) = self.screens.last_mut() {
            view.stored(mine(&self.store, self.annotator_id, view.prompt_id)?, Some(thumb.response_id), None);
        }
        Ok(())
    }

    /// Takes back the annotator's last rating and shows that answer again.
    pub(super) fn undo_thumb(&mut self) -> anyhow::Result<()> {
        let Some(undo) = self.store.undo_last_thumb(self.annotator_id)? else {
            self.message = "no rating to undo".into();
            return Ok(());
        };
        self.seconds_today = self.store.seconds_today(self.annotator_id)?;
        self.reload_queue_item()?;
        self.message = match &undo.restored {
            Some(t) => format!("undone: the answer is {} again", t.rating.as_str()),
            None => "undone: rate this answer again".into(),
        };
        if let Some(Screen::Thumbs(view)) = self.screens.last_mut() {
            view.stored(mine(&self.store, self.annotator_id, view.prompt_id)?, None, Some(&undo.withdrawn));
        }
        Ok(())
    }

    /// Re-reads the counts and status of the prompt under review after a rating or an undo.
    fn reload_queue_item(&mut self) -> anyhow::Result<()> {
        let Some(Screen::Thumbs(view)) = self.screens.last() else { return Ok(()) };
        let prompt_id = view.prompt_id;
        if let Some(index) = self.queue.items.iter().position(|i| i.row.prompt_id == prompt_id) {
            queue::reload_item(&self.store, self.annotator_id, &mut self.queue.items[index])?;
            self.queue.mark_touched(index);
        }
        Ok(())
    }
}

/// A prompt's answers and my ratings of them, for the single-answer review.
fn read_view(store: &Store, prompt_id: i64, annotator_id: i64) -> anyhow::Result<ThumbsView> {
    let row = store.queue_row(prompt_id)?;
    let domain = row.as_ref().and_then(|r| r.domain.clone());
    Ok(ThumbsView::new(
        prompt_id,
        row.and_then(|r| r.external_id).unwrap_or_else(|| prompt_id.to_string()),
        store.prompt_messages(prompt_id)?,
        store.responses_of(prompt_id)?,
        mine(store, annotator_id, prompt_id)?,
        store.guideline_text(domain.as_deref())?.map(|(id, _)| id),
    ))
}

/// My active ratings of a prompt's answers, by response id.
pub(super) fn mine(store: &Store, annotator_id: i64, prompt_id: i64) -> anyhow::Result<HashMap<i64, ActiveThumb>> {
    Ok(store.my_thumbs(annotator_id, prompt_id)?.into_iter().map(|t| (t.response_id, t)).collect())
}
