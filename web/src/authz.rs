//! Role × action, in one place. Handlers ask [`allowed`] and [`may_record_event`]; nothing
//! else decides access. Which kinds a role records comes from `yiciban_core::node::may_record`
//! (the core checks it again when it writes); whether an action fits the case's current step
//! and whether this node holds the baton is the fold's rule, mirrored by [`actions_now`] so
//! pages offer only what would be accepted.
//!
//! Public, with no login: `/login`, `/verify` (checks a printed result's seal, changes
//! nothing), `/rate` (the citizen's rating: the receipt number and the phone's last 4 digits
//! identify the case, a double-submit token guards the form, failures lock the receipt number
//! for a while), `/static/*`, and `POST /api/v1/login` and `/api/v1/enroll`
//! (HMAC-authenticated).
//!
//! 三员分立: the county admin (系统管理员) runs the system (node health, supervision,
//! statistics); the security admin (安全管理员) alone manages accounts and certificates: the
//! users of each node's directory ([`Action::ManageUsers`]) and enrolment tokens and revocation
//! ([`Action::ManageEnrolment`]); the auditor reads the audit trail. Neither admin touches
//! case content.

use yiciban_core::catalog::Tier;
use yiciban_core::event::EventKind;
use yiciban_core::fold::{CaseState, Status};
use yiciban_core::users::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the catalogue and guides.
    ViewCatalog,
    /// See case lists, the review queue, details and results.
    ViewCases,
    /// Accept a new application.
    FileApplication,
    /// Record some event on a case (which kinds: [`may_record_event`]).
    RecordEvent,
    /// Upload a photo of a material.
    UploadPhoto,
    /// See an applicant's personal data in full (unmasked ID numbers); every view is audited.
    ViewPersonalData,
    /// See the follow-ups of bad ratings (回访整改).
    ViewFollowUps,
    /// Close a follow-up with a comment (the core accepts it at a county node only).
    CloseFollowUp,
    /// See the county console's node table.
    ViewNodes,
    /// Urge (催办) the tier holding a late case's baton (the core accepts it at the county).
    Urge,
    /// See the statistics (统计分析): counts and rates, no personal data.
    ViewStatistics,
    /// See and change the users of a node's directory (`/admin/nodes/{id}`): add, reset a
    /// password, disable or enable.
    ManageUsers,
    /// Issue enrolment tokens, list enrolled nodes, revoke a node (`/admin/enrol`).
    ManageEnrolment,
    /// Publish the county's working-day calendar (`/calendar`; the core accepts it at the
    /// county only): running the system is the county admin's.
    PublishCalendar,
    /// See the documents refused for good and what each node sent that was refused
    /// (`/quarantine`).
    ViewQuarantine,
}

pub fn allowed(role: Role, action: Action) -> bool {
    use Action::*;
    use Role::*;
    match action {
        ViewCatalog => true,
        ViewCases => matches!(role, Clerk | Reviewer | Approver | CountyAdmin),
        FileApplication | UploadPhoto => role == Clerk,
        RecordEvent => matches!(role, Clerk | Reviewer | Approver),
        ViewPersonalData => role.handles_cases(),
        ViewFollowUps => matches!(role, Clerk | Reviewer | Approver | CountyAdmin),
        CloseFollowUp => matches!(role, Clerk | Reviewer | Approver),
        Urge => matches!(role, CountyAdmin | Approver),
        ViewNodes => matches!(role, CountyAdmin | SecurityAdmin | Approver),
        ViewStatistics => matches!(role, Clerk | Reviewer | Approver | CountyAdmin),
        ManageUsers | ManageEnrolment => role == SecurityAdmin,
        PublishCalendar => role == CountyAdmin,
        // What a node refused concerns whoever works there: the clerk whose case is held
        // back, the admins who act on it, the auditor.
        ViewQuarantine => true,
    }
}

/// Whether `role` records events of `kind`: clerks withdraw, receive supplements, issue,
/// record pick-ups and enter paper ratings; reviewers pass, reject or ask for a supplement; approvers approve, reject
/// or ask for a supplement; all three comment.
pub fn may_record_event(role: Role, kind: &EventKind) -> bool {
    allowed(role, Action::RecordEvent) && yiciban_core::node::may_record(role, kind)
}

/// Whether `role` hands a result over at once: an immediate item settled at the counter
/// (`issued` and `picked_up` in one step) or a 一件事 bundle handed out (`issued` on each
/// ready sub-case).
pub fn may_hand_out(role: Role) -> bool {
    may_record_event(role, &EventKind::Issued) && may_record_event(role, &EventKind::PickedUp)
}

/// The kinds `role` may record on a case in `state` at a node of tier `here`, in the order a
/// page offers them: the step's own actions first, then a paper rating once the result was
/// handed out, then comment, then withdrawal.
pub fn actions_now(role: Role, here: Tier, state: &CaseState) -> Vec<EventKind> {
    let mut kinds = Vec::new();
    let baton_here = state.tier == Some(here);
    // Decisions are taken on a step of the route (`step_index`), never on supplement/pick-up.
    let on_route = state.step_index.is_some();
    let step_action = state
        .step
        .as_deref()
        .map(|s| s.split_once(':').map_or(s, |(_, a)| a))
        .unwrap_or("");
    if baton_here {
        match step_action {
            "review" if on_route => kinds.extend([
                EventKind::ReviewPassed,
                EventKind::SupplementRequested,
                EventKind::Rejected,
            ]),
            "approve" if on_route => kinds.extend([
                EventKind::Approved,
                EventKind::SupplementRequested,
                EventKind::Rejected,
            ]),
            "supplement" if state.status == Status::SupplementRequested => {
                kinds.push(EventKind::SupplementProvided);
            }
            "issue" if state.status == Status::ReadyToIssue => kinds.push(EventKind::Issued),
            "pickup" if state.status == Status::Issued => kinds.push(EventKind::PickedUp),
            _ => {}
        }
    }
    if yiciban_core::rating::rateable(state.status) {
        kinds.push(EventKind::Rated);
    }
    kinds.push(EventKind::Comment);
    let open = matches!(
        state.status,
        Status::UnderReview | Status::SupplementRequested | Status::ReadyToIssue
    );
    // The applicant withdraws at the village, while the case is open and undecided.
    if here == Tier::Village && open && !state.decided {
        kinds.push(EventKind::Withdrawn);
    }
    kinds.retain(|k| may_record_event(role, k));
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auditors_and_security_admins_see_no_cases() {
        for role in [Role::Auditor, Role::SecurityAdmin] {
            assert!(!allowed(role, Action::ViewCases));
            assert!(!allowed(role, Action::FileApplication));
            assert!(!allowed(role, Action::ViewFollowUps));
            assert!(!allowed(role, Action::ViewStatistics));
        }
        assert!(allowed(Role::CountyAdmin, Action::ViewStatistics));
        assert!(allowed(Role::Clerk, Action::ViewStatistics));
        assert!(allowed(Role::CountyAdmin, Action::ViewFollowUps));
        assert!(allowed(Role::Approver, Action::ViewFollowUps));
        assert!(!allowed(Role::CountyAdmin, Action::CloseFollowUp));
        assert!(allowed(Role::Clerk, Action::FileApplication));
        assert!(!allowed(Role::Reviewer, Action::FileApplication));
        for action in [Action::ManageUsers, Action::ManageEnrolment] {
            for role in Role::ALL {
                assert_eq!(
                    allowed(role, action),
                    role == Role::SecurityAdmin,
                    "{role:?}"
                );
            }
        }
    }

    #[test]
    fn each_role_records_its_own_kinds_only() {
        use EventKind as K;
        assert!(may_record_event(Role::Clerk, &K::Issued));
        assert!(may_record_event(Role::Clerk, &K::SupplementProvided));
        assert!(!may_record_event(Role::Clerk, &K::ReviewPassed));
        assert!(may_record_event(Role::Reviewer, &K::ReviewPassed));
        assert!(!may_record_event(Role::Reviewer, &K::Approved));
        assert!(!may_record_event(Role::Reviewer, &K::Issued));
        assert!(may_record_event(Role::Approver, &K::Approved));
        assert!(may_record_event(Role::Approver, &K::Rejected));
        assert!(may_record_event(Role::Clerk, &K::Rated), "paper ratings");
        assert!(!may_record_event(Role::Reviewer, &K::Rated));
        for kind in [K::Accepted, K::Urged, K::Other("x".into())] {
            assert!(!may_record_event(Role::Clerk, &kind), "{kind:?}");
        }
        for role in [Role::CountyAdmin, Role::SecurityAdmin, Role::Auditor] {
            assert!(!may_record_event(role, &K::Comment), "{role:?}");
        }
    }

    fn state_at(step: &str, status: Status, decided: bool) -> CaseState {
        let route: Vec<String> = [
            "village:accept",
            "town:review",
            "county:approve",
            "village:issue",
        ]
        .map(String::from)
        .to_vec();
        let mut st = yiciban_core::fold::fold(&route, &[]);
        st.status = status;
        st.step = Some(step.into());
        st.tier = step.split_once(':').and_then(|(t, _)| Tier::parse(t));
        st.step_index = route.iter().position(|s| s == step);
        st.decided = decided;
        st
    }

    #[test]
    fn only_the_baton_holder_sees_the_steps_actions() {
        use EventKind as K;
        let review = state_at("town:review", Status::UnderReview, false);
        assert_eq!(
            actions_now(Role::Reviewer, Tier::Town, &review),
            [
                K::ReviewPassed,
                K::SupplementRequested,
                K::Rejected,
                K::Comment
            ]
        );
        assert_eq!(
            actions_now(Role::Clerk, Tier::Village, &review),
            [K::Comment, K::Withdrawn]
        );
        assert_eq!(
            actions_now(Role::Approver, Tier::County, &review),
            [K::Comment]
        );
        let approve = state_at("county:approve", Status::UnderReview, true);
        assert_eq!(
            actions_now(Role::Approver, Tier::County, &approve),
            [K::Approved, K::SupplementRequested, K::Rejected, K::Comment]
        );
        let supplement = state_at("village:supplement", Status::SupplementRequested, false);
        assert_eq!(
            actions_now(Role::Clerk, Tier::Village, &supplement),
            [K::SupplementProvided, K::Comment, K::Withdrawn]
        );
        let issue = state_at("village:issue", Status::ReadyToIssue, true);
        assert_eq!(
            actions_now(Role::Clerk, Tier::Village, &issue),
            [K::Issued, K::Comment]
        );
        let pickup = state_at("village:pickup", Status::Issued, true);
        assert_eq!(
            actions_now(Role::Clerk, Tier::Village, &pickup),
            [K::PickedUp, K::Rated, K::Comment]
        );
        assert_eq!(
            actions_now(Role::Reviewer, Tier::Town, &pickup),
            [K::Comment],
            "only clerks enter paper ratings"
        );
        assert!(actions_now(Role::Auditor, Tier::Village, &pickup).is_empty());
    }
}
