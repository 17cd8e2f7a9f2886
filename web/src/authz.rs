//! Role × action, in one place. Handlers ask [`allowed`]; nothing else decides access.

use yiciban_core::users::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the catalogue and guides.
    ViewCatalog,
    /// See case lists and details.
    ViewCases,
    /// Accept a new application.
    FileApplication,
    /// Comment on or withdraw a case.
    RecordEvent,
    /// Upload a photo of a material.
    UploadPhoto,
}

pub fn allowed(role: Role, action: Action) -> bool {
    use Action::*;
    use Role::*;
    match action {
        ViewCatalog => true,
        ViewCases => matches!(role, Clerk | Reviewer | Approver | CountyAdmin),
        FileApplication | UploadPhoto => role == Clerk,
        RecordEvent => matches!(role, Clerk | Reviewer | Approver),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auditors_and_security_admins_see_no_cases() {
        for role in [Role::Auditor, Role::SecurityAdmin] {
            assert!(!allowed(role, Action::ViewCases));
            assert!(!allowed(role, Action::FileApplication));
        }
        assert!(allowed(Role::Clerk, Action::FileApplication));
        assert!(!allowed(Role::Reviewer, Action::FileApplication));
    }
}
