"""Patient-identifying DICOM attributes (after DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile).

`PHI_KEYWORDS` lists attributes the basic profile removes, empties or replaces (names, identifiers, addresses,
institutions, people, free-text comments, identifying UIDs, dates and times). `is_phi` adds rules by value
representation so nothing slips through a gap in the list: every person name (PN), date (DA), date-time (DT)
and time (TM) element, and every private element, counts as identifying.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement

PHI_KEYWORDS: frozenset[str] = frozenset(
    {
        # Patient identity and demographics
        "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientBirthName", "PatientAddress",
        "PatientAge", "PatientSex", "PatientSexNeutered", "PatientSize", "PatientWeight", "PatientMotherBirthName",
        "PatientTelephoneNumbers", "PatientTelecomInformation", "PatientComments", "PatientReligiousPreference",
        "PatientInsurancePlanCodeSequence", "PatientPrimaryLanguageCodeSequence",
        "PatientPrimaryLanguageModifierCodeSequence", "PatientState", "PatientTransportArrangements",
        "PatientInstitutionResidence", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
        "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "MedicalRecordLocator", "MilitaryRank",
        "BranchOfService", "EthnicGroup", "Occupation", "CountryOfResidence", "RegionOfResidence",
        "AdditionalPatientHistory", "MedicalAlerts", "Allergies", "SmokingStatus", "PregnancyStatus",
        "LastMenstrualDate", "SpecialNeeds", "ResponsiblePerson", "ResponsiblePersonRole", "ResponsibleOrganization",
        "PatientSpeciesDescription", "PatientBreedDescription", "BreedRegistrationSequence",
        "ReferencedPatientSequence", "ReferencedPatientAliasSequence", "ReferencedPatientPhotoSequence",
        "ConfidentialityConstraintOnPatientDataDescription",
        # Visit, admission, orders
        "AccessionNumber", "IssuerOfAccessionNumberSequence", "StudyID", "AdmissionID", "IssuerOfAdmissionID",
        "IssuerOfAdmissionIDSequence", "ServiceEpisodeID", "ServiceEpisodeDescription", "IssuerOfServiceEpisodeID",
        "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "DischargeDiagnosisDescription",
        "CurrentPatientLocation", "ScheduledPatientInstitutionResidence", "VisitComments",
        "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
        "OrderCallbackPhoneNumber", "OrderCallbackTelecomInformation", "OrderEnteredBy", "OrderEntererLocation",
        "ReasonForTheRequestedProcedure", "ReasonForStudy", "RequestAttributesSequence", "RequestedProcedureID",
        "RequestedProcedureComments", "RequestedProcedureDescription", "RequestedProcedureLocation",
        "RequestedContrastAgent", "ImagingServiceRequestComments", "ReasonForTheImagingServiceRequest",
        "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence", "InsurancePlanIdentification",
        # People and institutions
        "InstitutionName", "InstitutionAddress", "InstitutionCodeSequence", "InstitutionalDepartmentName",
        "InstitutionalDepartmentTypeCodeSequence", "ReferringPhysicianName", "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers", "ReferringPhysicianIdentificationSequence", "PhysiciansOfRecord",
        "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianName",
        "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy",
        "PhysiciansReadingStudyIdentificationSequence", "RequestingPhysician", "RequestingPhysicianIdentificationSequence",
        "RequestingService", "OperatorsName", "OperatorIdentificationSequence", "ScheduledPerformingPhysicianName",
        "ScheduledPerformingPhysicianIdentificationSequence", "PerformedLocation", "ScheduledStudyLocation",
        "ScheduledStudyLocationAETitle", "HumanPerformerName", "HumanPerformerOrganization",
        "ActualHumanPerformersSequence", "ScheduledHumanPerformersSequence", "PersonName", "PersonAddress",
        "PersonTelephoneNumbers", "PersonTelecomInformation", "PersonIdentificationCodeSequence", "ReviewerName",
        "VerifyingObserverName", "VerifyingObserverSequence", "VerifyingObserverIdentificationCodeSequence",
        "VerifyingOrganization", "AuthorObserverSequence", "ParticipantSequence", "ContentCreatorName",
        "ContentCreatorIdentificationCodeSequence", "CustodialOrganizationSequence", "DistributionName",
        "DistributionAddress", "NamesOfIntendedRecipientsOfResults",
        "IntendedRecipientsOfResultsIdentificationSequence", "PhysicianApprovingInterpretation",
        "InterpretationRecorder", "InterpretationTranscriber", "InterpretationAuthor", "InterpretationApproverSequence",
        "ResultsDistributionListSequence", "ResultsIDIssuer", "InterpretationIDIssuer", "InterpretationText",
        "InterpretationDiagnosisDescription", "Impressions", "ResultsComments",
        # Stations and devices that can locate the patient
        "StationName", "PerformedStationName", "PerformedStationAETitle", "PerformedStationNameCodeSequence",
        "PerformedStationGeographicLocationCodeSequence", "ScheduledStationName", "ScheduledStationAETitle",
        "ScheduledStationNameCodeSequence", "ScheduledStationGeographicLocationCodeSequence", "DeviceSerialNumber",
        "DeviceUID", "DetectorID", "GantryID", "GeneratorID", "PlateID", "CassetteID", "ModifyingDeviceID",
        "ModifyingDeviceManufacturer", "SourceApplicationEntityTitle",
        # Procedure steps and descriptions (free text may name the patient)
        "PerformedProcedureStepID", "PerformedProcedureStepDescription", "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime", "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime",
        "CommentsOnThePerformedProcedureStep", "ScheduledProcedureStepDescription", "ScheduledProcedureStepLocation",
        "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime", "ScheduledProcedureStepEndDate",
        "ScheduledProcedureStepEndTime", "StudyDescription", "SeriesDescription", "ProtocolName", "StudyComments",
        "ImageComments", "FrameComments", "AcquisitionComments", "DerivationDescription", "ContributionDescription",
        "IdentifyingComments", "TextComments", "TextString", "OverlayComments", "ImagePresentationComments",
        "AcquisitionDeviceProcessingDescription", "AcquisitionProtocolDescription", "ModifiedImageDescription",
        "ContrastBolusAgent", "PreMedication", "TopicAuthor", "TopicKeywords", "TopicSubject", "TopicTitle",
        "GraphicAnnotationSequence", "ContentSequence", "AcquisitionContextSequence", "IconImageSequence",
        "OriginalAttributesSequence", "ModifiedAttributesSequence", "DigitalSignaturesSequence",
        "ReferencedDigitalSignatureSequence", "ReferencedSOPInstanceMACSequence", "MAC", "DataSetTrailingPadding",
        "StudyIDIssuer", "TimezoneOffsetFromUTC",
        # Identifying UIDs (the basic profile replaces them; they link images to a patient's record)
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "MediaStorageSOPInstanceUID",
        "FrameOfReferenceUID", "SynchronizationFrameOfReferenceUID", "ReferencedFrameOfReferenceUID",
        "RelatedFrameOfReferenceUID", "ReferencedSOPInstanceUID", "ReferencedSOPInstanceUIDInFile",
        "IrradiationEventUID", "InstanceCreatorUID", "DimensionOrganizationUID", "StorageMediaFileSetUID",
        "ConcatenationUID", "DoseReferenceUID", "FiducialUID", "TransactionUID", "UID", "TargetUID",
        "LargePaletteColorLookupTableUID", "ReferencedImageSequence", "SourceImageSequence",
        "AffectedSOPInstanceUID", "RequestedSOPInstanceUID", "FailedSOPInstanceUIDList", "DigitalSignatureUID",
        "CreatorVersionUID", "ContextGroupExtensionCreatorUID", "TemplateExtensionCreatorUID",
        "TemplateExtensionOrganizationUID",
        # Dates and times that date the patient's care
        "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime",
        "AcquisitionDateTime", "ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime",
        "InstanceCoercionDateTime", "OverlayDate", "OverlayTime", "CurveDate", "CurveTime", "AdmittingDate",
        "AdmittingTime", "DateOfSecondaryCapture", "TimeOfSecondaryCapture", "DateOfLastCalibration",
        "TimeOfLastCalibration", "DateOfLastDetectorCalibration", "TimeOfLastDetectorCalibration",
        "StartAcquisitionDateTime", "EndAcquisitionDateTime", "ExpectedCompletionDateTime", "RadiopharmaceuticalStartTime",
        "RadiopharmaceuticalStopTime", "StudyVerifiedDate", "StudyVerifiedTime", "StudyReadDate", "StudyReadTime",
        "ScheduledStudyStartDate", "ScheduledStudyStartTime", "StudyArrivalDate", "StudyArrivalTime",
        "StudyCompletionDate", "StudyCompletionTime", "ScheduledAdmissionDate", "ScheduledAdmissionTime",
        "ScheduledDischargeDate", "ScheduledDischargeTime", "DischargeDate", "DischargeTime", "IssueDateOfImagingServiceRequest",
        "IssueTimeOfImagingServiceRequest", "InterpretationRecordedDate", "InterpretationRecordedTime",
        "InterpretationTranscriptionDate", "InterpretationTranscriptionTime", "InterpretationApprovalDate",
        "InterpretationApprovalTime", "ReferencedDateTime", "ObservationDateTime", "VerificationDateTime",
        "FrameAcquisitionDateTime", "FrameReferenceDateTime",
    }
)

# Value representations whose values identify people or date their care, whatever the keyword.
PHI_VRS: frozenset[str] = frozenset({"PN", "DA", "DT", "TM"})


def is_phi(element: DataElement) -> bool:
    """True for an element to withhold when PHI is excluded: listed keyword, private tag, or a PN/DA/DT/TM value."""
    return element.keyword in PHI_KEYWORDS or element.tag.is_private or element.VR in PHI_VRS
