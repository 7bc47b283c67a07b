// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title Coordinator of a layerfed federation
/// @notice Records, round by round, which layer updates the participants published (by CID) and which merged
/// model a majority of them attests. It stores no weights and merges nothing: every peer fetches the updates
/// from IPFS, merges them itself, deterministically, and attests the CID of the model it obtained.
/// @dev Round numbers start at 1 and only grow; a failed round is never reopened, the next round retrains the
/// same schedule step. A CID is stored as its sha2-256 digest plus its codec (raw 0x55 or dag-pb 0x70): the
/// CIDv1 string is rebuilt off chain. Deadline rule, for a round whose deadline passes (see README.md):
/// anyone may call `closeExpiredRound`; a submission phase with at least one update closes with what arrived
/// and attestation gets a fresh window; one with no update, or an attestation window that ends without a
/// strict majority, fails the round and the previous canonical model carries over.
/// Version 2 (see README.md) adds, all fixed at deployment: a membership mode (allowlist, open, or admission by
/// a majority vote of the members), a cap on the samples an update may claim, one update per CID and round, and
/// a per-participant record of every round it submitted to, whose strikes suspend it for a number of rounds.
/// Version 3 adds merge committees: in a round with more than `committeeThreshold` submissions, only
/// `committeeSize` submitters, drawn (`drawCommittee`, by anyone) from the hash of the block that closed
/// submission, merge and attest, and a strict majority of that committee finalizes the round (see README.md,
/// "Committees").
contract Coordinator {
    /// @notice How the federation trains the encoder: layer-wise, progressive, or end to end.
    enum TrainingMode {
        LayerWise,
        Progressive,
        EndToEnd
    }

    /// @notice Where a round stands. `Submission`: updates are accepted until the quorum or the deadline.
    /// `Attestation`: submitters attest the model they merged. `Finalized` and `Failed` are final.
    enum Phase {
        Submission,
        Attestation,
        Finalized,
        Failed
    }

    /// @notice Who may register. `Allowlist`: accounts the deployer `allow`s. `Open`: anyone (demos only: one
    /// person can register many accounts). `Vote`: the deployer allows the founding members before the first
    /// registration; after it an account may register once a strict majority of the members voted to admit it.
    enum Membership {
        Allowlist,
        Open,
        Vote
    }

    /// @notice Why a round failed.
    enum FailureReason {
        NoSubmissions,
        NoMajority
    }

    /// @notice What the deployer fixes for the life of the federation.
    /// @dev `trainingMode` is a uint8, not the enum, so that a bad value reaches the constructor's own check
    /// (and its custom error) instead of failing ABI decoding without a reason.
    struct Settings {
        uint8 trainingMode;
        uint32 stages;
        uint32 roundsPerStage;
        uint32 quorum;
        uint64 roundDuration;
        bytes32 modelSpecDigest;
        uint8 genesisCodec;
        bytes32 genesisDigest;
        uint64 federationSeed;
        uint8 membership;
        uint64 maximumSamples;
        uint32 strikeLimit;
        uint32 suspensionRounds;
        uint32 committeeThreshold;
        uint32 committeeSize;
    }

    /// @notice What a participant did in the rounds it submitted to, once each round is over.
    /// @dev `submitted` counts rounds that are over. In a finalized round a submitter attested the canonical
    /// model, attested another, or did not attest (harmless: the majority did not need it). `withheld` counts
    /// rounds that failed at their attestation deadline without its attestation. Attesting another model and
    /// withholding are strikes; `strikeLimit` strikes in a row suspend the participant until round
    /// `suspendedUntil` is over (the suspension doubles each time, `suspensions` counts them). Attesting the
    /// canonical model clears the strikes.
    struct ParticipantRecord {
        uint32 submitted;
        uint32 attestedCanonical;
        uint32 attestedOther;
        uint32 notAttested;
        uint32 withheld;
        uint8 strikes;
        uint8 suspensions;
        uint64 suspendedUntil;
        uint64 lastSubmittedRound;
    }

    /// @notice One round's public state. `attestationExpired`: the round failed at its attestation deadline,
    /// so its submitters that did not attest withheld (a strike), unlike a round that fails early.
    struct RoundInfo {
        uint32 stage;
        Phase phase;
        uint64 deadline;
        uint32 submissionCount;
        uint32 attestationCount;
        uint8 canonicalCodec;
        bytes32 canonicalDigest;
        bool attestationExpired;
    }

    /// @notice One update submitted to a round.
    struct Submission {
        address participant;
        uint64 samples;
        uint8 codec;
        bytes32 digest;
    }

    /// @notice A finalized round and its canonical model, as listed by `roundLog`.
    struct FinalizedRound {
        uint256 round;
        uint32 stage;
        uint8 codec;
        bytes32 digest;
    }

    /// @dev Packed into one slot, so that a submission or an attestation rewrites a single word.
    /// `attestationExpired`: the round failed at its attestation deadline (its silent submitters withheld).
    /// `anchorBlock`: 0 when every submitter merges and attests, else the block that closed submission, from
    /// whose hash the round's committee (of `committeeSize`) is drawn. Kept in the same word, so that the
    /// submission closing a committee round writes no other slot (a uint40 outlasts any chain's block count).
    struct Round {
        uint64 deadline;
        uint32 stage;
        uint32 submissionCount;
        uint32 attestationCount;
        uint32 leadingAttestations;
        Phase phase;
        uint8 canonicalCodec;
        bool attestationExpired;
        uint40 anchorBlock;
        bytes32 canonicalDigest;
    }

    /// @dev Two slots per account. The last rounds it submitted to and attested in make the one-per-round
    /// checks free: rounds only grow, and only the current round accepts either. The record is folded lazily:
    /// the counters cover every round it submitted to but the last, which `_fold` adds once it is over (at
    /// the next submission, or on the fly in `record`). A fold depends only on stored values, so a submission
    /// refused for suspension loses nothing: the next attempt folds the same round the same way.
    struct Member {
        bool allowed;
        bool registered;
        uint32 position;
        uint64 lastSubmittedRound;
        uint64 lastAttestedRound;
        uint8 strikes;
        uint8 suspensions;
        uint64 suspendedUntil;
        // second slot, written non-zero at registration so that the first attestation costs what later ones do
        bool recordOpened;
        bytes16 attestedModel;
        uint24 submitted;
        uint24 attestedCanonical;
        uint24 attestedOther;
        uint24 notAttested;
        uint24 withheld;
    }

    /// @dev One slot per update, keyed by its digest: the same key refuses a CID submitted twice in a round.
    struct Update {
        address participant;
        uint64 samples;
        uint8 codec;
    }

    uint8 private constant CODEC_RAW = 0x55;
    uint8 private constant CODEC_DAG_PB = 0x70;
    uint8 private constant MAXIMUM_SUSPENSION_DOUBLINGS = 16;
    uint32 private constant MAXIMUM_COMMITTEE_SIZE = 256; // bounds the gas of the draw

    address private immutable _deployer;
    uint8 private immutable _trainingMode;
    uint32 private immutable _stages;
    uint32 private immutable _roundsPerStage;
    uint32 private immutable _quorum;
    uint64 private immutable _roundDuration;
    bytes32 private immutable _modelSpecDigest;
    uint8 private immutable _genesisCodec;
    bytes32 private immutable _genesisDigest;
    uint64 private immutable _federationSeed;
    Membership private immutable _membership;
    uint64 private immutable _maximumSamples;
    uint32 private immutable _strikeLimit;
    uint32 private immutable _suspensionRounds;
    uint32 private immutable _committeeThreshold;
    uint32 private immutable _committeeSize;

    // One slot: the round count is set at deployment, so the first finalization rewrites a non-zero word.
    uint128 private _currentRound;
    uint128 private _finalizedRounds;
    uint8 private _latestCodec;
    bytes32 private _latestDigest;
    address[] private _participants;
    mapping(address account => Member) private _members;
    mapping(uint256 round => Round) private _rounds;
    bool private _founded;
    mapping(uint256 round => mapping(bytes32 digest => Update)) private _updates;
    mapping(uint256 round => mapping(uint256 index => bytes32 digest)) private _updateDigests;
    mapping(uint256 round => mapping(bytes32 model => uint32 votes)) private _votes;
    mapping(address candidate => uint32 votes) private _admissionVotes;
    mapping(address candidate => mapping(address voter => bool)) private _admissionVoted;
    mapping(uint256 round => bytes32 seed) private _committeeSeeds; // zero until the committee is drawn
    mapping(uint256 round => mapping(address account => bool)) private _committee;

    /// @notice An account joined the federation.
    /// @param participant The account that registered.
    event ParticipantRegistered(address indexed participant);

    /// @notice An account left the federation, by itself or because the deployer disallowed it.
    /// @param participant The account that left.
    event ParticipantLeft(address indexed participant);

    /// @notice The deployer put an account on the allowlist.
    /// @param account The account allowed to register.
    event AccountAllowed(address indexed account);

    /// @notice A member voted to admit an account (membership by vote).
    /// @param candidate The account voted for.
    /// @param voter The member who voted.
    /// @param votes How many members have voted for it now; a strict majority of the members allows it.
    event AdmissionVoted(address indexed candidate, address indexed voter, uint32 votes);

    /// @notice The deployer took an account off the allowlist.
    /// @param account The account no longer allowed to register.
    event AccountDisallowed(address indexed account);

    /// @notice A round opened for submissions.
    /// @param round The round number.
    /// @param stage The training stage (1-based) the round belongs to.
    /// @param deadline When the submission phase expires (unix seconds).
    event RoundOpened(uint256 indexed round, uint32 indexed stage, uint64 deadline);

    /// @notice A participant published its update for a round.
    /// @param round The round number.
    /// @param participant The submitter.
    /// @param codec The update CID's codec.
    /// @param digest The update CID's sha2-256 digest.
    /// @param samples How many training samples the update was computed from (the merge weight).
    event UpdateSubmitted(
        uint256 indexed round, address indexed participant, uint8 codec, bytes32 digest, uint64 samples
    );

    /// @notice A round stopped accepting updates; its submitters may now attest.
    /// @param round The round number.
    /// @param submissions How many updates the round holds.
    /// @param quorumReached False when the deadline closed the phase with fewer updates than the quorum.
    /// @param attestationDeadline When the attestation phase expires (unix seconds).
    event SubmissionClosed(uint256 indexed round, uint32 submissions, bool quorumReached, uint64 attestationDeadline);

    /// @notice A round's merge committee was drawn (by `drawCommittee`, or by the `closeExpiredRound` that
    /// fails a round nobody drew).
    /// Anyone can check the draw: `seed` is keccak256(blockhash(seedBlock), round, federationSeed), where
    /// `seedBlock` is the block that closed the round's submissions (or, when the draw came more than 256
    /// blocks later, the latest block 256*m after it), and `members` are the submitters at the positions
    /// `_draw(seed, submissions, size)` picks.
    /// @param round The round number.
    /// @param seedBlock The block whose hash seeded the draw.
    /// @param seed The randomness the committee was drawn from.
    /// @param members The committee, in draw order.
    event CommitteeDrawn(uint256 indexed round, uint64 seedBlock, bytes32 seed, address[] members);

    /// @notice A submitter attested the model it merged for a round.
    /// @param round The round number.
    /// @param participant The attester.
    /// @param codec The model CID's codec.
    /// @param digest The model CID's sha2-256 digest.
    /// @param votes How many attestations this model has now.
    event ModelAttested(uint256 indexed round, address indexed participant, uint8 codec, bytes32 digest, uint32 votes);

    /// @notice A strict majority of a round's submitters attested one model: it is the round's canonical model.
    /// @param round The round number.
    /// @param stage The stage the round belongs to.
    /// @param codec The canonical model CID's codec.
    /// @param digest The canonical model CID's sha2-256 digest.
    /// @param finalizedRounds How many rounds are finalized, this one included.
    event RoundFinalized(uint256 indexed round, uint32 indexed stage, uint8 codec, bytes32 digest, uint256 finalizedRounds);

    /// @notice A round ended without a canonical model; the previous one carries over.
    /// @param round The round number.
    /// @param stage The stage the round belonged to; the next round retrains it.
    /// @param reason Why it failed.
    event RoundFailed(uint256 indexed round, uint32 indexed stage, FailureReason reason);

    /// @notice The last round of the last stage was finalized: training is complete.
    /// @param round The last round.
    /// @param codec The final model CID's codec.
    /// @param digest The final model CID's sha2-256 digest.
    event TrainingCompleted(uint256 indexed round, uint8 codec, bytes32 digest);

    /// @notice Only the deployer may change the allowlist.
    /// @param caller The account that tried.
    error CoordinatorNotDeployer(address caller);

    /// @notice The training mode is not 0 (layer-wise), 1 (progressive) or 2 (end to end).
    /// @param mode The mode given.
    error CoordinatorInvalidTrainingMode(uint8 mode);

    /// @notice Stages and rounds per stage must both be at least 1.
    /// @param stages The number of stages given.
    /// @param roundsPerStage The rounds per stage given.
    error CoordinatorInvalidSchedule(uint32 stages, uint32 roundsPerStage);

    /// @notice The quorum must be at least 1.
    /// @param quorum The quorum given.
    error CoordinatorInvalidQuorum(uint32 quorum);

    /// @notice The round duration must be at least 1 second.
    /// @param roundDuration The duration given.
    error CoordinatorInvalidRoundDuration(uint64 roundDuration);

    /// @notice A CID must have codec raw (0x55) or dag-pb (0x70) and a non-zero sha2-256 digest.
    /// @param codec The codec given.
    /// @param digest The digest given.
    error CoordinatorUnsupportedCid(uint8 codec, bytes32 digest);

    /// @notice The membership mode is not 0 (allowlist), 1 (open) or 2 (vote).
    /// @param membership The mode given.
    error CoordinatorInvalidMembership(uint8 membership);

    /// @notice The largest sample count an update may claim must be at least 1.
    /// @param maximumSamples The maximum given.
    error CoordinatorInvalidMaximumSamples(uint64 maximumSamples);

    /// @notice A strike limit (at most 255) needs a suspension of at least one round.
    /// @param strikeLimit The strike limit given.
    /// @param suspensionRounds The suspension given.
    error CoordinatorInvalidSuspension(uint32 strikeLimit, uint32 suspensionRounds);

    /// @notice A committee needs a threshold of at least its size (so that it is drawn from more submitters
    /// than it has seats) and at most 256 seats; size 0 switches committees off.
    /// @param committeeThreshold The threshold given.
    /// @param committeeSize The size given.
    error CoordinatorInvalidCommittee(uint32 committeeThreshold, uint32 committeeSize);

    /// @notice Only a round in attestation with a committee has one to draw, and only after the block that
    /// closed its submissions, from whose hash it is drawn.
    /// @param round The round.
    /// @param anchorBlock The block that closed its submissions (0 in a round without a committee).
    error CoordinatorCommitteeNotDrawable(uint256 round, uint64 anchorBlock);

    /// @notice The round's committee is drawn already (`committee` names it).
    /// @param round The round.
    error CoordinatorCommitteeAlreadyDrawn(uint256 round);

    /// @notice In a committee round, attestations wait for the draw (`drawCommittee`, which anyone may call).
    /// @param round The round.
    error CoordinatorCommitteeNotDrawn(uint256 round);

    /// @notice In a round with a committee only its members attest.
    /// @param round The round.
    /// @param account The submitter that tried, not drawn.
    error CoordinatorNotCommitteeMember(uint256 round, address account);

    /// @notice The allowlist is unused: membership is open.
    error CoordinatorMembershipOpen();

    /// @notice With membership by vote the deployer only allows the founding members, before the first
    /// registration; the members admit everyone after them (`voteToAdmit`).
    error CoordinatorAdmissionByVote();

    /// @notice `voteToAdmit` is for federations whose membership is by vote.
    error CoordinatorAdmissionNotByVote();

    /// @notice The account may register already.
    /// @param account The account.
    error CoordinatorAlreadyAllowed(address account);

    /// @notice The member already voted to admit this account.
    /// @param candidate The account voted for.
    /// @param voter The member.
    error CoordinatorDuplicateVote(address candidate, address voter);

    /// @notice The account is not on the allowlist.
    /// @param account The account that tried to register.
    error CoordinatorNotAllowed(address account);

    /// @notice The account is registered already.
    /// @param account The account.
    error CoordinatorAlreadyRegistered(address account);

    /// @notice The account is not a registered participant.
    /// @param account The account.
    error CoordinatorNotParticipant(address account);

    /// @notice Every round of the schedule is finalized; nothing more is accepted.
    /// @param finalizedRounds How many rounds were finalized.
    error CoordinatorTrainingComplete(uint256 finalizedRounds);

    /// @notice Only the current round accepts updates and attestations.
    /// @param round The round given.
    /// @param currentRound The current round.
    error CoordinatorRoundNotCurrent(uint256 round, uint256 currentRound);

    /// @notice The round's submission phase is over (quorum reached or deadline passed).
    /// @param round The round.
    error CoordinatorRoundClosed(uint256 round);

    /// @notice The participant already submitted an update to this round.
    /// @param round The round.
    /// @param participant The participant.
    error CoordinatorDuplicateSubmission(uint256 round, address participant);

    /// @notice An update must come from at least one training sample.
    /// @param samples The sample count given.
    error CoordinatorInvalidSampleCount(uint64 samples);

    /// @notice An update may claim at most the federation's `maximumSamples`.
    /// @param samples The sample count given.
    /// @param maximumSamples The largest count allowed.
    error CoordinatorSampleCountTooLarge(uint64 samples, uint64 maximumSamples);

    /// @notice This CID (by its digest) was submitted to the round already, by `submitter`.
    /// @param round The round.
    /// @param codec The codec given.
    /// @param digest The digest given.
    /// @param submitter The participant who submitted it first.
    error CoordinatorDuplicateUpdate(uint256 round, uint8 codec, bytes32 digest, address submitter);

    /// @notice The participant's record crossed the strike limit: it may not submit until `untilRound` is over.
    /// @param participant The participant.
    /// @param untilRound The last round of its suspension.
    error CoordinatorSuspended(address participant, uint64 untilRound);

    /// @notice The round is not in its attestation phase, or that phase's deadline passed.
    /// @param round The round.
    error CoordinatorAttestationClosed(uint256 round);

    /// @notice Only the round's submitters may attest.
    /// @param round The round.
    /// @param account The account that tried.
    error CoordinatorNotSubmitter(uint256 round, address account);

    /// @notice The submitter already attested a model for this round.
    /// @param round The round.
    /// @param participant The submitter.
    error CoordinatorDuplicateAttestation(uint256 round, address participant);

    /// @notice The current round's deadline has not passed yet.
    /// @param round The current round.
    /// @param deadline Its deadline (unix seconds).
    error CoordinatorRoundNotExpired(uint256 round, uint64 deadline);

    /// @notice The round does not exist yet.
    /// @param round The round asked for.
    error CoordinatorUnknownRound(uint256 round);

    /// @notice Fixes the federation's settings and opens round 1.
    /// @param initial The settings; with an allowlist (or founding members, by vote) the deployer then calls
    /// `allow` per account.
    constructor(Settings memory initial) {
        if (initial.trainingMode > uint8(TrainingMode.EndToEnd)) {
            revert CoordinatorInvalidTrainingMode(initial.trainingMode);
        }
        if (initial.stages == 0 || initial.roundsPerStage == 0) {
            revert CoordinatorInvalidSchedule(initial.stages, initial.roundsPerStage);
        }
        if (initial.quorum == 0) revert CoordinatorInvalidQuorum(initial.quorum);
        if (initial.roundDuration == 0) revert CoordinatorInvalidRoundDuration(initial.roundDuration);
        _requireSupportedCid(initial.genesisCodec, initial.genesisDigest);
        if (initial.membership > uint8(Membership.Vote)) revert CoordinatorInvalidMembership(initial.membership);
        if (initial.maximumSamples == 0) revert CoordinatorInvalidMaximumSamples(initial.maximumSamples);
        if (initial.strikeLimit > type(uint8).max || (initial.strikeLimit > 0 && initial.suspensionRounds == 0)) {
            revert CoordinatorInvalidSuspension(initial.strikeLimit, initial.suspensionRounds);
        }
        if (
            initial.committeeSize != 0
                && (initial.committeeThreshold < initial.committeeSize || initial.committeeSize > MAXIMUM_COMMITTEE_SIZE)
        ) revert CoordinatorInvalidCommittee(initial.committeeThreshold, initial.committeeSize);
        _deployer = msg.sender;
        _trainingMode = initial.trainingMode;
        _stages = initial.stages;
        _roundsPerStage = initial.roundsPerStage;
        _quorum = initial.quorum;
        _roundDuration = initial.roundDuration;
        _modelSpecDigest = initial.modelSpecDigest;
        _genesisCodec = initial.genesisCodec;
        _genesisDigest = initial.genesisDigest;
        _federationSeed = initial.federationSeed;
        _membership = Membership(initial.membership);
        _maximumSamples = initial.maximumSamples;
        _strikeLimit = initial.strikeLimit;
        _suspensionRounds = initial.suspensionRounds;
        _committeeThreshold = initial.committeeThreshold;
        _committeeSize = initial.committeeSize;
        _latestCodec = initial.genesisCodec;
        _latestDigest = initial.genesisDigest;
        // Immutables cannot be read during construction, hence round 1 is opened from the arguments.
        _openRound(1, 1, uint64(block.timestamp) + initial.roundDuration);
    }

    modifier onlyDeployer() {
        if (msg.sender != _deployer) revert CoordinatorNotDeployer(msg.sender);
        _;
    }

    // ---------------------------------------------------------------- membership

    /// @notice Allows an account to register: with an allowlist at any time, by vote only the founding
    /// members, before the first registration.
    /// @param account The account to allow.
    function allow(address account) external onlyDeployer {
        if (_membership == Membership.Open) revert CoordinatorMembershipOpen();
        if (_membership == Membership.Vote && _founded) revert CoordinatorAdmissionByVote();
        _members[account].allowed = true;
        emit AccountAllowed(account);
    }

    /// @notice Takes an account off the allowlist and, if it is registered, removes it from the participants
    /// (allowlist only: by vote, the deployer has no say after the founding). Its updates and attestations
    /// already recorded stand.
    /// @param account The account to disallow.
    function disallow(address account) external onlyDeployer {
        if (_membership == Membership.Open) revert CoordinatorMembershipOpen();
        if (_membership == Membership.Vote) revert CoordinatorAdmissionByVote();
        _members[account].allowed = false;
        emit AccountDisallowed(account);
        if (_members[account].registered) _removeParticipant(account);
    }

    /// @notice Votes, as a registered member, to admit `candidate` (membership by vote). Once a strict
    /// majority of the current members voted for it, the candidate is allowed and may `register`.
    /// @param candidate The account to admit.
    function voteToAdmit(address candidate) external {
        if (_membership != Membership.Vote) revert CoordinatorAdmissionNotByVote();
        if (!_members[msg.sender].registered) revert CoordinatorNotParticipant(msg.sender);
        if (_members[candidate].allowed) revert CoordinatorAlreadyAllowed(candidate);
        if (_admissionVoted[candidate][msg.sender]) revert CoordinatorDuplicateVote(candidate, msg.sender);
        _admissionVoted[candidate][msg.sender] = true;
        uint32 votes = _admissionVotes[candidate] + 1;
        _admissionVotes[candidate] = votes;
        emit AdmissionVoted(candidate, msg.sender, votes);
        if (uint256(votes) * 2 > _participants.length) {
            _members[candidate].allowed = true;
            emit AccountAllowed(candidate);
        }
    }

    /// @notice Joins the federation as the calling account.
    function register() external {
        Member storage member = _members[msg.sender];
        if (member.registered) revert CoordinatorAlreadyRegistered(msg.sender);
        if (_membership != Membership.Open && !member.allowed) revert CoordinatorNotAllowed(msg.sender);
        if (_membership == Membership.Vote && !_founded) _founded = true;
        if (!member.recordOpened) member.recordOpened = true;
        _participants.push(msg.sender);
        member.registered = true;
        member.position = uint32(_participants.length);
        emit ParticipantRegistered(msg.sender);
    }

    /// @notice Leaves the federation. An update already submitted to the current round stays, and its
    /// submitter may still attest that round: the majority is counted over the round's submitters.
    function leave() external {
        if (!_members[msg.sender].registered) revert CoordinatorNotParticipant(msg.sender);
        _removeParticipant(msg.sender);
    }

    // ---------------------------------------------------------------- rounds

    /// @notice Records the caller's update for the current round. Closes the submission phase when the
    /// quorum is reached. Folds the caller's previous round into its record first, and refuses the update of
    /// a suspended participant, a CID the round holds already and a claim above `maximumSamples`.
    /// @param round The current round (guards against submitting to a round that moved on meanwhile).
    /// @param codec The update CID's codec: raw (0x55) or dag-pb (0x70).
    /// @param digest The update CID's sha2-256 digest.
    /// @param samples How many training samples the update was computed from.
    function submitUpdate(uint256 round, uint8 codec, bytes32 digest, uint64 samples) external {
        Round storage current = _requireCurrentRound(round);
        if (current.phase != Phase.Submission || block.timestamp > current.deadline) {
            revert CoordinatorRoundClosed(round);
        }
        Member memory member = _members[msg.sender];
        if (!member.registered) revert CoordinatorNotParticipant(msg.sender);
        if (member.lastSubmittedRound == round) revert CoordinatorDuplicateSubmission(round, msg.sender);
        _requireSupportedCid(codec, digest);
        if (samples == 0) revert CoordinatorInvalidSampleCount(samples);
        if (samples > _maximumSamples) revert CoordinatorSampleCountTooLarge(samples, _maximumSamples);
        Update storage update = _updates[round][digest];
        if (update.samples != 0) revert CoordinatorDuplicateUpdate(round, codec, digest, update.participant);
        if (member.lastSubmittedRound != 0) _fold(member, msg.sender);
        if (round <= member.suspendedUntil) revert CoordinatorSuspended(msg.sender, member.suspendedUntil);

        member.lastSubmittedRound = uint64(round);
        _members[msg.sender] = member;
        uint32 count = current.submissionCount;
        _updates[round][digest] = Update(msg.sender, samples, codec);
        _updateDigests[round][count] = digest;
        current.submissionCount = count + 1;
        emit UpdateSubmitted(round, msg.sender, codec, digest, samples);
        if (count + 1 >= _quorum) _closeSubmission(round, current, true);
    }

    /// @notice Attests the model the caller merged from the current round's updates. When a strict majority
    /// of the round's submitters attest the same model, it becomes the canonical model, the round is
    /// finalized and the next round opens. When no model can reach a majority any more, the round fails.
    /// In a committee round only members attest, once the committee is drawn (`drawCommittee`).
    /// @param round The current round.
    /// @param codec The model CID's codec: raw (0x55) or dag-pb (0x70).
    /// @param digest The model CID's sha2-256 digest.
    function attestModel(uint256 round, uint8 codec, bytes32 digest) external {
        Round storage current = _requireCurrentRound(round);
        if (current.phase != Phase.Attestation || block.timestamp > current.deadline) {
            revert CoordinatorAttestationClosed(round);
        }
        Member storage member = _members[msg.sender];
        if (member.lastSubmittedRound != round) revert CoordinatorNotSubmitter(round, msg.sender);
        bool committeeRound = current.anchorBlock != 0;
        if (committeeRound && !_committee[round][msg.sender]) {
            // A member's own flag proves the draw; only a refusal reads the seed, to say why.
            if (_committeeSeeds[round] == bytes32(0)) revert CoordinatorCommitteeNotDrawn(round);
            revert CoordinatorNotCommitteeMember(round, msg.sender);
        }
        if (member.lastAttestedRound == round) revert CoordinatorDuplicateAttestation(round, msg.sender);
        _requireSupportedCid(codec, digest);

        bytes32 model = keccak256(abi.encodePacked(codec, digest));
        member.lastAttestedRound = uint64(round);
        member.attestedModel = bytes16(model);
        uint32 votes = _votes[round][model] + 1;
        _votes[round][model] = votes;
        uint32 attested = current.attestationCount + 1;
        current.attestationCount = attested;
        if (votes > current.leadingAttestations) current.leadingAttestations = votes;
        emit ModelAttested(round, msg.sender, codec, digest, votes);

        // The electorate: the committee when the round has one, else every submitter.
        uint32 electorate = committeeRound ? _committeeSize : current.submissionCount;
        if (uint256(votes) * 2 > electorate) {
            _finalize(round, current, codec, digest);
        } else if (uint256(current.leadingAttestations + (electorate - attested)) * 2 <= electorate) {
            // Even if every elector still silent joined the leading model, it would not reach a majority.
            _fail(round, current, FailureReason.NoMajority);
        }
    }

    /// @notice Draws the merge committee of a round in attestation that has one; anyone may call it, once,
    /// in a block after the one that closed the round's submissions (the draw takes that block's hash).
    /// Stores one flag per member, so that each attestation checks membership with one read; emits
    /// `CommitteeDrawn`. Its own call, so that no attestation pays for the draw.
    /// @param round The round.
    function drawCommittee(uint256 round) external {
        Round storage stored = _existingRound(round);
        if (_committeeSeeds[round] != bytes32(0)) revert CoordinatorCommitteeAlreadyDrawn(round);
        if (stored.anchorBlock == 0 || stored.phase != Phase.Attestation) {
            revert CoordinatorCommitteeNotDrawable(round, stored.anchorBlock);
        }
        _drawCommittee(round, stored.anchorBlock);
    }

    /// @notice Ends the current round's expired phase; anyone may call it once the deadline has passed.
    /// A submission phase with at least one update closes with what arrived (partial participation) and
    /// attestation gets a fresh window of one round duration. A submission phase without updates, or an
    /// attestation phase without a majority, fails the round: the previous canonical model carries over and
    /// the next round, opened at once, retrains the same schedule step.
    function closeExpiredRound() external {
        uint256 round = _currentRound;
        Round storage current = _rounds[round];
        if (current.phase == Phase.Finalized) revert CoordinatorTrainingComplete(_finalizedRounds);
        if (block.timestamp <= current.deadline) revert CoordinatorRoundNotExpired(round, current.deadline);
        if (current.phase == Phase.Submission && current.submissionCount > 0) {
            _closeSubmission(round, current, false);
        } else if (current.phase == Phase.Submission) {
            _fail(round, current, FailureReason.NoSubmissions);
        } else {
            // Drawn now if nobody drew it, so that the record knows who withheld.
            uint40 anchor = current.anchorBlock;
            if (anchor != 0 && _committeeSeeds[round] == bytes32(0)) _drawCommittee(round, anchor);
            current.attestationExpired = true;
            _fail(round, current, FailureReason.NoMajority);
        }
    }

    // ---------------------------------------------------------------- views

    /// @notice The federation's settings, as fixed at deployment.
    /// @return current The settings.
    function settings() external view returns (Settings memory current) {
        current.trainingMode = _trainingMode;
        current.stages = _stages;
        current.roundsPerStage = _roundsPerStage;
        current.quorum = _quorum;
        current.roundDuration = _roundDuration;
        current.modelSpecDigest = _modelSpecDigest;
        current.genesisCodec = _genesisCodec;
        current.genesisDigest = _genesisDigest;
        current.federationSeed = _federationSeed;
        current.membership = uint8(_membership);
        current.maximumSamples = _maximumSamples;
        current.strikeLimit = _strikeLimit;
        current.suspensionRounds = _suspensionRounds;
        current.committeeThreshold = _committeeThreshold;
        current.committeeSize = _committeeSize;
    }

    /// @notice The contract's version: 2 adds membership modes, bounded claims, unique updates and records;
    /// 3 adds merge committees.
    /// @return The version.
    function version() external pure returns (uint256) {
        return 3;
    }

    /// @notice The account that deployed the contract and keeps the allowlist.
    /// @return The deployer.
    function deployer() external view returns (address) {
        return _deployer;
    }

    /// @notice The current round: the open one, or the last one once training is complete.
    /// @return The round number (1-based).
    function currentRound() external view returns (uint256) {
        return _currentRound;
    }

    /// @notice The stage (1-based) of the current round: finalized rounds / rounds per stage + 1, capped
    /// at the number of stages.
    /// @return The stage.
    function currentStage() external view returns (uint32) {
        return _rounds[_currentRound].stage;
    }

    /// @notice How many rounds reached a canonical model.
    /// @return The count.
    function finalizedRounds() external view returns (uint256) {
        return _finalizedRounds;
    }

    /// @notice Whether every round of the schedule is finalized.
    /// @return True when training is complete.
    function trainingComplete() external view returns (bool) {
        return _finalizedRounds == uint256(_stages) * _roundsPerStage;
    }

    /// @notice A round's phase, deadline, counts and canonical model (zero digest when it has none).
    /// @param round The round number.
    /// @return The round's state.
    function roundInfo(uint256 round) external view returns (RoundInfo memory) {
        return _info(_existingRound(round));
    }

    /// @notice Everything a peer polls for, in one call: the current round and its state, the schedule's
    /// progress, and the chain time the answer holds for.
    /// @return round The current round.
    /// @return info The current round's state.
    /// @return finalized How many rounds are finalized.
    /// @return complete Whether training is complete.
    /// @return chainTime The timestamp of the block the call ran in (unix seconds).
    function currentState()
        external
        view
        returns (uint256 round, RoundInfo memory info, uint256 finalized, bool complete, uint256 chainTime)
    {
        round = _currentRound;
        info = _info(_rounds[round]);
        finalized = _finalizedRounds;
        complete = finalized == uint256(_stages) * _roundsPerStage;
        chainTime = block.timestamp;
    }

    /// @notice The updates submitted to a round, in arrival order.
    /// @param round The round number.
    /// @return The submissions.
    function submissions(uint256 round) external view returns (Submission[] memory) {
        uint256 count = _existingRound(round).submissionCount;
        Submission[] memory result = new Submission[](count);
        for (uint256 index = 0; index < count; ++index) {
            bytes32 digest = _updateDigests[round][index];
            Update storage update = _updates[round][digest];
            result[index] = Submission(update.participant, update.samples, update.codec, digest);
        }
        return result;
    }

    /// @notice A round's merge committee, the seed it was drawn from and the block that closed its
    /// submissions. No members (and a zero seed) until `drawCommittee` draws them, and never in a
    /// round where every submitter merges (`anchorBlock` 0). Before the draw, a peer computes the committee
    /// itself from `blockhash(anchorBlock)` (`agent.adapters.committee_draw`).
    /// @param round The round number.
    /// @return members The committee, in draw order.
    /// @return seed The randomness it was drawn from.
    /// @return anchorBlock The block that closed the round's submissions.
    function committee(uint256 round)
        external
        view
        returns (address[] memory members, bytes32 seed, uint64 anchorBlock)
    {
        Round storage stored = _existingRound(round);
        seed = _committeeSeeds[round];
        anchorBlock = stored.anchorBlock;
        if (seed == bytes32(0)) return (new address[](0), seed, anchorBlock);
        uint256[] memory positions = _draw(seed, stored.submissionCount, _committeeSize);
        members = new address[](positions.length);
        for (uint256 index = 0; index < positions.length; ++index) {
            members[index] = _submitterAt(round, positions[index]);
        }
    }

    /// @notice How many submitters attested a given model for a round.
    /// @param round The round number.
    /// @param codec The model CID's codec.
    /// @param digest The model CID's digest.
    /// @return The number of attestations.
    function attestations(uint256 round, uint8 codec, bytes32 digest) external view returns (uint32) {
        _existingRound(round);
        return _votes[round][keccak256(abi.encodePacked(codec, digest))];
    }

    /// @notice A round's canonical model; a zero digest when the round is not finalized.
    /// @param round The round number.
    /// @return codec The CID's codec.
    /// @return digest The CID's digest.
    function canonicalModel(uint256 round) external view returns (uint8 codec, bytes32 digest) {
        Round storage stored = _existingRound(round);
        return (stored.canonicalCodec, stored.canonicalDigest);
    }

    /// @notice The canonical model of the last finalized round, or the genesis model before any.
    /// @return codec The CID's codec.
    /// @return digest The CID's digest.
    function latestCanonicalModel() external view returns (uint8 codec, bytes32 digest) {
        return (_latestCodec, _latestDigest);
    }

    /// @notice Every finalized round with its canonical model, oldest first.
    /// @return The finalized rounds.
    function roundLog() external view returns (FinalizedRound[] memory) {
        FinalizedRound[] memory log = new FinalizedRound[](_finalizedRounds);
        uint256 filled = 0;
        for (uint256 round = 1; round <= _currentRound; ++round) {
            Round storage stored = _rounds[round];
            if (stored.phase == Phase.Finalized) {
                log[filled++] = FinalizedRound(round, stored.stage, stored.canonicalCodec, stored.canonicalDigest);
            }
        }
        return log;
    }

    /// @notice The registered participants, in no particular order.
    /// @return The participants.
    function participants() external view returns (address[] memory) {
        return _participants;
    }

    /// @notice Whether an account is a registered participant.
    /// @param account The account.
    /// @return True when registered.
    function isParticipant(address account) external view returns (bool) {
        return _members[account].registered;
    }

    /// @notice Whether an account may register: always with open membership, else when allowlisted.
    /// @param account The account.
    /// @return True when it may register.
    function isAllowed(address account) external view returns (bool) {
        return _membership == Membership.Open || _members[account].allowed;
    }

    /// @notice How many members voted to admit an account (membership by vote).
    /// @param candidate The account.
    /// @return The number of votes.
    function admissionVotes(address candidate) external view returns (uint32) {
        return _admissionVotes[candidate];
    }

    /// @notice What an account did in the rounds it submitted to, its last round included once it is over,
    /// and whether it is suspended.
    /// @param account The account.
    /// @return The record.
    function record(address account) external view returns (ParticipantRecord memory) {
        Member memory member = _members[account];
        uint64 last = member.lastSubmittedRound;
        if (last != 0 && (last < _currentRound || _rounds[last].phase == Phase.Finalized)) _fold(member, account);
        return ParticipantRecord(
            member.submitted,
            member.attestedCanonical,
            member.attestedOther,
            member.notAttested,
            member.withheld,
            member.strikes,
            member.suspensions,
            member.suspendedUntil,
            last
        );
    }

    // ---------------------------------------------------------------- internals

    function _requireCurrentRound(uint256 round) private view returns (Round storage) {
        if (_rounds[_currentRound].phase == Phase.Finalized) revert CoordinatorTrainingComplete(_finalizedRounds);
        if (round != _currentRound) revert CoordinatorRoundNotCurrent(round, _currentRound);
        return _rounds[round];
    }

    function _info(Round storage stored) private view returns (RoundInfo memory) {
        return RoundInfo(
            stored.stage,
            stored.phase,
            stored.deadline,
            stored.submissionCount,
            stored.attestationCount,
            stored.canonicalCodec,
            stored.canonicalDigest,
            stored.attestationExpired
        );
    }

    function _existingRound(uint256 round) private view returns (Round storage) {
        if (round == 0 || round > _currentRound) revert CoordinatorUnknownRound(round);
        return _rounds[round];
    }

    function _requireSupportedCid(uint8 codec, bytes32 digest) private pure {
        if ((codec != CODEC_RAW && codec != CODEC_DAG_PB) || digest == bytes32(0)) {
            revert CoordinatorUnsupportedCid(codec, digest);
        }
    }

    function _removeParticipant(address account) private {
        Member storage member = _members[account];
        uint256 index = member.position - 1;
        address last = _participants[_participants.length - 1];
        _participants[index] = last;
        _members[last].position = uint32(index + 1);
        _participants.pop();
        member.registered = false;
        member.position = 0;
        emit ParticipantLeft(account);
    }

    /// @dev Adds the member's last round, which must be over, to its counters; applies the strike rule. In a
    /// round with a committee, only its members can withhold: the others were not asked to attest.
    function _fold(Member memory member, address account) private view {
        uint64 last = member.lastSubmittedRound;
        Round storage done = _rounds[last];
        bool attested = member.lastAttestedRound == last;
        bool strike = false;
        member.submitted += 1;
        if (done.phase == Phase.Finalized) {
            if (!attested) {
                member.notAttested += 1;
            } else if (member.attestedModel == _modelKey(done.canonicalCodec, done.canonicalDigest)) {
                member.attestedCanonical += 1;
                member.strikes = 0;
            } else {
                member.attestedOther += 1;
                strike = true;
            }
        } else if (done.attestationExpired && !attested && (done.anchorBlock == 0 || _committee[last][account])) {
            member.withheld += 1;
            strike = true;
        }
        if (!strike || _strikeLimit == 0) return;
        member.strikes += 1;
        if (member.strikes < _strikeLimit) return;
        uint8 doublings =
            member.suspensions < MAXIMUM_SUSPENSION_DOUBLINGS ? member.suspensions : MAXIMUM_SUSPENSION_DOUBLINGS;
        member.suspendedUntil = last + (uint64(_suspensionRounds) << doublings);
        if (member.suspensions < type(uint8).max) member.suspensions += 1;
        member.strikes = 0;
    }

    function _modelKey(uint8 codec, bytes32 digest) private pure returns (bytes16) {
        return bytes16(keccak256(abi.encodePacked(codec, digest)));
    }

    function _closeSubmission(uint256 round, Round storage current, bool quorumReached) private {
        uint64 attestationDeadline = uint64(block.timestamp) + _roundDuration;
        current.phase = Phase.Attestation;
        current.deadline = attestationDeadline;
        uint32 submitted = current.submissionCount;
        emit SubmissionClosed(round, submitted, quorumReached, attestationDeadline);
        if (_committeeSize != 0 && submitted > _committeeThreshold) {
            current.anchorBlock = uint40(block.number);
        }
    }

    /// @dev Draws the round's committee (not drawn yet) from the hash of the block that closed its
    /// submissions: nobody can know it when sending the closing transaction (not even a caller of
    /// `closeExpiredRound` choosing its moment), so nobody can re-roll the draw; only the block's producer
    /// could grind it. Stores the seed, so that `committee` can replay the draw, and one flag per member, so
    /// that `attestModel` checks membership with one read. A draw more than 256 blocks after the close (when
    /// `blockhash` has forgotten the anchor) takes the latest block 256*m after the anchor instead.
    function _drawCommittee(uint256 round, uint40 anchor) private {
        if (block.number <= anchor) revert CoordinatorCommitteeNotDrawable(round, anchor);
        uint256 seedBlock = anchor + ((block.number - anchor - 1) / 256) * 256;
        bytes32 seed = keccak256(abi.encodePacked(blockhash(seedBlock), round, _federationSeed));
        _committeeSeeds[round] = seed;
        uint256[] memory positions = _draw(seed, _rounds[round].submissionCount, _committeeSize);
        address[] memory members = new address[](positions.length);
        for (uint256 index = 0; index < positions.length; ++index) {
            address member = _submitterAt(round, positions[index]);
            _committee[round][member] = true;
            members[index] = member;
        }
        emit CommitteeDrawn(round, uint64(seedBlock), seed, members);
    }

    /// @dev `size` distinct positions among `count` (> size) submissions: the j-th candidate is
    /// keccak256(seed, j) mod count, and a candidate drawn already is skipped. Mirrored off chain by
    /// `agent.protocol.committee.draw_positions`.
    function _draw(bytes32 seed, uint256 count, uint256 size) private pure returns (uint256[] memory chosen) {
        chosen = new uint256[](size);
        uint256 filled = 0;
        for (uint256 counter = 0; filled < size; ++counter) {
            uint256 candidate = uint256(keccak256(abi.encodePacked(seed, counter))) % count;
            bool taken = false;
            for (uint256 index = 0; index < filled; ++index) {
                if (chosen[index] == candidate) {
                    taken = true;
                    break;
                }
            }
            if (!taken) chosen[filled++] = candidate;
        }
    }

    function _submitterAt(uint256 round, uint256 position) private view returns (address) {
        return _updates[round][_updateDigests[round][position]].participant;
    }

    function _finalize(uint256 round, Round storage current, uint8 codec, bytes32 digest) private {
        current.phase = Phase.Finalized;
        current.canonicalCodec = codec;
        current.canonicalDigest = digest;
        _latestCodec = codec;
        _latestDigest = digest;
        uint256 finalized = _finalizedRounds + 1;
        _finalizedRounds = uint128(finalized);
        emit RoundFinalized(round, current.stage, codec, digest, finalized);
        if (finalized == uint256(_stages) * _roundsPerStage) {
            emit TrainingCompleted(round, codec, digest);
        } else {
            _openNextRound();
        }
    }

    function _fail(uint256 round, Round storage current, FailureReason reason) private {
        current.phase = Phase.Failed;
        emit RoundFailed(round, current.stage, reason);
        _openNextRound();
    }

    function _openNextRound() private {
        uint32 stage = uint32(_finalizedRounds / _roundsPerStage + 1);
        _openRound(_currentRound + 1, stage, uint64(block.timestamp) + _roundDuration);
    }

    function _openRound(uint256 round, uint32 stage, uint64 deadline) private {
        _currentRound = uint128(round);
        Round storage opened = _rounds[round];
        opened.stage = stage;
        opened.deadline = deadline;
        emit RoundOpened(round, stage, deadline);
    }
}
