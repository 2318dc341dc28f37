// Least-privilege rights of the app identity for the faults it applies through Azure Resource Manager.
//
// - "NSG rule writer": read one NSG and read/write/delete its security rules, assigned on the
//   private-endpoint NSG only (network faults).
// - "Revision operator": read/update the container app and activate/deactivate its revisions,
//   assigned on the container app only (broken-deployment faults).
// - "Revision linked access": the two linked-access checks ARM makes when a container app is
//   updated (join its environment, assign its user-assigned identity), each assigned on exactly
//   that one environment and that one identity.
//
// Custom roles are tenant-wide objects: their names carry the resource group so that two azd
// environments in one tenant do not collide, and they outlive `azd down` (see docs/deployment.md).

@description('Object id of the app identity.')
param principalId string

@description('Name of the app identity (linked access: assigning it to the app on update).')
param identityName string

@description('Name of the private-endpoint NSG the network fault backend writes rules to.')
param nsgName string

@description('Name of the container app the deployment faults change.')
param appName string

@description('Name of the Container Apps environment of that app.')
param containerAppsEnvironmentName string

resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' existing = {
  name: nsgName
}

resource app 'Microsoft.App/containerApps@2024-03-01' existing = {
  name: appName
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' existing = {
  name: containerAppsEnvironmentName
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

resource nsgRuleWriter 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'chaos-lab-nsg-rule-writer')
  properties: {
    roleName: 'chaos-lab NSG rule writer (${resourceGroup().name})'
    description: 'Read one network security group and create, update and delete its security rules (chaos-lab network faults).'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Network/networkSecurityGroups/read'
          'Microsoft.Network/networkSecurityGroups/securityRules/read'
          'Microsoft.Network/networkSecurityGroups/securityRules/write'
          'Microsoft.Network/networkSecurityGroups/securityRules/delete'
          // Polling the long-running rule PUT/DELETE (Azure-AsyncOperation / Location headers).
          'Microsoft.Network/locations/operations/read'
          'Microsoft.Network/locations/operationResults/read'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource nsgRuleWriterAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: nsg
  name: guid(nsg.id, principalId, nsgRuleWriter.id)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', nsgRuleWriter.name)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource revisionOperator 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'chaos-lab-revision-operator')
  properties: {
    roleName: 'chaos-lab revision operator (${resourceGroup().name})'
    description: 'Read and update one container app and activate or deactivate its revisions (chaos-lab deployment faults).'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.App/containerApps/read'
          'Microsoft.App/containerApps/write'
          'Microsoft.App/containerApps/revisions/read'
          'Microsoft.App/containerApps/revisions/activate/action'
          'Microsoft.App/containerApps/revisions/deactivate/action'
          // Polling the long-running container app update.
          'Microsoft.App/locations/containerappOperationResults/read'
          'Microsoft.App/locations/containerappOperationStatuses/read'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource revisionOperatorAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: app
  name: guid(app.id, principalId, revisionOperator.id)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', revisionOperator.name)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource linkedAccess 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'chaos-lab-revision-linked-access')
  properties: {
    roleName: 'chaos-lab revision linked access (${resourceGroup().name})'
    description: 'Linked-access checks of a container app update: join its environment, assign its user-assigned identity.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.App/managedEnvironments/join/action'
          'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource environmentJoinAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: environment
  name: guid(environment.id, principalId, linkedAccess.id)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', linkedAccess.name)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource identityAssignAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: identity
  name: guid(identity.id, principalId, linkedAccess.id)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', linkedAccess.name)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
