//! BuildKit v0.24's Dockerfile lint rules (`frontend/dockerfile/linter/ruleset.go`): the same names,
//! descriptions, documentation URLs and message formats, so a warning reads the same from rbuild as
//! from `docker buildx build`.

/// One lint rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub description: &'static str,
    /// The rule's documentation page; empty for `InvalidBaseImagePlatform`, which has none.
    pub url: &'static str,
    /// Reported only when `# check=experimental=NAME` (or `all`) asks for it.
    pub experimental: bool,
}

macro_rules! rules {
    ($($id:ident: $name:literal, $url:literal, $exp:literal, $desc:literal;)*) => {
        $(pub const $id: Rule = Rule { name: $name, description: $desc, url: $url, experimental: $exp };)*
        /// Every rule, in ruleset.go's order.
        pub const ALL: &[&Rule] = &[$(&$id),*];
    };
}

rules! {
    STAGE_NAME_CASING: "StageNameCasing", "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/", false,
        "Stage names should be lowercase";
    FROM_AS_CASING: "FromAsCasing", "https://docs.docker.com/go/dockerfile/rule/from-as-casing/", false,
        "The 'as' keyword should match the case of the 'from' keyword";
    NO_EMPTY_CONTINUATION: "NoEmptyContinuation", "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/", false,
        "Empty continuation lines will become errors in a future release";
    CONSISTENT_INSTRUCTION_CASING: "ConsistentInstructionCasing", "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/", false,
        "All commands within the Dockerfile should use the same casing (either upper or lower)";
    DUPLICATE_STAGE_NAME: "DuplicateStageName", "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/", false,
        "Stage names should be unique";
    RESERVED_STAGE_NAME: "ReservedStageName", "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/", false,
        "Reserved words should not be used as stage names";
    JSON_ARGS_RECOMMENDED: "JSONArgsRecommended", "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/", false,
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals";
    MAINTAINER_DEPRECATED: "MaintainerDeprecated", "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/", false,
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author";
    UNDEFINED_ARG_IN_FROM: "UndefinedArgInFrom", "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/", false,
        "FROM command must use declared ARGs";
    WORKDIR_RELATIVE_PATH: "WorkdirRelativePath", "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/", false,
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes";
    UNDEFINED_VAR: "UndefinedVar", "https://docs.docker.com/go/dockerfile/rule/undefined-var/", false,
        "Variables should be defined before their use";
    MULTIPLE_INSTRUCTIONS_DISALLOWED: "MultipleInstructionsDisallowed", "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/", false,
        "Multiple instructions of the same type should not be used in the same stage";
    LEGACY_KEY_VALUE_FORMAT: "LegacyKeyValueFormat", "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/", false,
        "Legacy key/value format with whitespace separator should not be used";
    INVALID_BASE_IMAGE_PLATFORM: "InvalidBaseImagePlatform", "", false,
        "Base image platform does not match expected target platform";
    REDUNDANT_TARGET_PLATFORM: "RedundantTargetPlatform", "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/", false,
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior";
    SECRETS_USED_IN_ARG_OR_ENV: "SecretsUsedInArgOrEnv", "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/", false,
        "Sensitive data should not be used in the ARG or ENV commands";
    INVALID_DEFAULT_ARG_IN_FROM: "InvalidDefaultArgInFrom", "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/", false,
        "Default value for global ARG results in an empty or invalid base image name";
    FROM_PLATFORM_FLAG_CONST_DISALLOWED: "FromPlatformFlagConstDisallowed", "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/", false,
        "FROM --platform flag should not use a constant value";
    COPY_IGNORED_FILE: "CopyIgnoredFile", "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/", true,
        "Attempting to Copy file that is excluded by .dockerignore";
    INVALID_DEFINITION_DESCRIPTION: "InvalidDefinitionDescription", "https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/", true,
        "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.";
    EXPOSE_PROTO_CASING: "ExposeProtoCasing", "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/", false,
        "Protocol in EXPOSE instruction should be lowercase";
    EXPOSE_INVALID_FORMAT: "ExposeInvalidFormat", "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/", false,
        "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release";
}

/// The rule with this name.
pub fn by_name(name: &str) -> Option<&'static Rule> {
    ALL.iter().copied().find(|r| r.name == name)
}
